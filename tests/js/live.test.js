// Reconnecting: a server that closes with 1012 (service restart: it is draining, and a proxy
// sends the new socket to another replica) is reconnected to at once, with a little jitter; any
// other drop waits out the usual jittered backoff.
import { test } from 'node:test';
import assert from 'node:assert/strict';

/** Fakes for what live.js uses of the browser; `delays` records each reconnect timer. */
function browser() {
  const sockets = [];
  const delays = [];
  globalThis.window = { addEventListener() {} };
  globalThis.document = { addEventListener() {}, visibilityState: 'visible' };
  globalThis.location = new URL('http://127.0.0.1:8080/');
  globalThis.setTimeout = (fn, ms) => {
    delays.push(ms);
    return { fn };
  };
  globalThis.clearTimeout = () => {};
  globalThis.WebSocket = class {
    static OPEN = 1;
    constructor(url) {
      this.url = url;
      this.listeners = {};
      sockets.push(this);
    }
    addEventListener(type, fn) {
      this.listeners[type] = fn;
    }
    close(code) {
      this.listeners.close({ code });
    }
  };
  return { sockets, delays };
}

async function live() {
  const fakes = browser();
  const { createLive } = await import('../../static/live.js');
  const handle = createLive({
    pair: () => ({ symbol: 'BTC/USD', interval: '1m' }),
    limit: () => 500,
    resumeFrom: () => null,
    onMessage() {},
    onConnecting() {},
    onOpen() {},
  });
  handle.connect();
  return { ...fakes, handle };
}

test('a close with 1012 reconnects within a quarter second, every time', async () => {
  const { sockets, delays } = await live();
  const timers = [];
  globalThis.setTimeout = (fn, ms) => {
    delays.push(ms);
    timers.push(fn);
    return {};
  };
  for (let i = 0; i < 20; i += 1) {
    sockets.at(-1).close(1012);
    timers.at(-1)(); // the reconnect opens the next socket
  }
  assert.equal(sockets.length, 21, 'one new socket per close');
  assert.ok(
    delays.every((d) => d >= 0 && d <= 250),
    `reconnects after ${delays.join(', ')} ms`,
  );
  assert.ok(new Set(delays).size > 1, 'jittered, not all at once');
});

test('other closes wait out a growing, jittered backoff', async () => {
  const { sockets, delays } = await live();
  const timers = [];
  globalThis.setTimeout = (fn, ms) => {
    delays.push(ms);
    timers.push(fn);
    return {};
  };
  for (let i = 0; i < 4; i += 1) {
    sockets.at(-1).close(1006);
    timers.at(-1)(); // the reconnect fires and fails again
  }
  assert.equal(delays.length, 4);
  const ceilings = [500, 1000, 2000, 4000];
  delays.forEach((d, i) => {
    assert.ok(d >= ceilings[i] / 2 && d <= ceilings[i], `retry ${i} after ${d} ms`);
  });
  // A 1012 in the middle of a backoff series still reconnects at once.
  sockets.at(-1).close(1012);
  assert.ok(delays.at(-1) <= 250, `after 1012: ${delays.at(-1)} ms`);
});
