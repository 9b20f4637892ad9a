// The page's one WebSocket (the protocol is in README.md): it asks for the pair on screen with
// a snapshot sized to the chart, takes snapshots as gzip binary frames, resumes after a drop
// where the server still has what was missed, follows switches, and reconnects by itself: at
// once (0–250 ms) when the server closed for a restart (1012), else with jittered exponential
// backoff.

const MAX_BACKOFF_MS = 10_000;
const FIRST_BACKOFF_MS = 500;
/** Close code of a server that drains for a restart: another replica (or the restarted one)
 * takes the viewer at once. */
const SERVICE_RESTART = 1012;
/** Reconnects after a restart spread over this much, so a replica's viewers don't land at once. */
const RESTART_JITTER_MS = 250;

/** Binary frames are gzip-compressed JSON (snapshots); text frames are JSON. */
async function decode(data) {
  if (typeof data === 'string') return JSON.parse(data);
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('gzip'));
  return JSON.parse(await new Response(stream).text());
}

/**
 * `pair()` is what the page shows ({ symbol, interval }); `limit()` how many candles a snapshot
 * should hold; `resumeFrom()` where the page's data left off ({ seq, epoch }) or null;
 * `onMessage` gets each parsed message, in the order sent; `onConnecting` runs when a new
 * socket starts (nothing on screen is current until its snapshot or resume); `onOpen` when one
 * is open.
 */
export function createLive({ pair, limit, resumeFrom, onMessage, onConnecting, onOpen }) {
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  const key = () => `${pair().symbol} ${pair().interval}`;

  function subscribe(s) {
    s.send(JSON.stringify({ type: 'subscribe', ...pair(), limit: limit() }));
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    const url = new URL('/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = new URLSearchParams({ ...pair(), limit: limit(), format: 'gzip' });
    const from = resumeFrom();
    if (from) {
      query.set('since', from.seq);
      query.set('epoch', from.epoch);
    }
    url.search = query;
    const s = new WebSocket(url);
    s.binaryType = 'arraybuffer';
    const asked = key();
    socket = s;
    onConnecting();

    // Inflating a snapshot takes a while: a text update sent after it must wait its turn.
    let queue = Promise.resolve();
    s.addEventListener('open', () => {
      // The user switched while the socket was opening: ask for what is on screen now.
      if (asked !== key()) subscribe(s);
      onOpen();
    });
    s.addEventListener('message', (ev) => {
      queue = queue
        .then(() => decode(ev.data))
        .catch(() => null) // an unreadable frame is skipped, as a malformed one always was
        .then((msg) => {
          if (msg === null || s !== socket) return;
          // A failing handler is reported like any uncaught error and the queue goes on.
          try {
            onMessage(msg);
          } catch (e) {
            reportError(e);
          }
        });
    });
    // 'error' is always followed by 'close', so only 'close' schedules the retry.
    s.addEventListener('close', (ev) => {
      if (s !== socket) return;
      socket = null;
      if (ev.code === SERVICE_RESTART) {
        onConnecting();
        retryTimer = setTimeout(connect, Math.random() * RESTART_JITTER_MS);
      } else {
        scheduleReconnect();
      }
    });
  }

  function scheduleReconnect() {
    onConnecting();
    const ceiling = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** attempt);
    attempt += 1;
    // Jitter spreads the viewers of a restarted server over the interval instead of one burst.
    retryTimer = setTimeout(connect, ceiling / 2 + Math.random() * (ceiling / 2));
  }

  // Coming back online or to the tab skips the rest of a long backoff.
  const reconnectNow = () => {
    if (socket === null && retryTimer !== null) connect();
  };
  window.addEventListener('online', reconnectNow);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') reconnectNow();
  });

  return {
    connect,
    /** Asks for `pair()` now; a closed or still-connecting socket asks once it opens. */
    resubscribe() {
      if (socket?.readyState === WebSocket.OPEN) subscribe(socket);
    },
    /** A snapshot or resume arrived: the next failure starts the backoff afresh. */
    settled() {
      attempt = 0;
    },
  };
}
