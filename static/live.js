// The page's one WebSocket (the protocol is in README.md): it asks for the pair on screen,
// follows switches, and reconnects by itself with jittered exponential backoff.

const MAX_BACKOFF_MS = 10_000;
const FIRST_BACKOFF_MS = 500;

/**
 * `pair()` is what the page shows ({ symbol, interval }); `onMessage` gets each parsed
 * message; `onConnecting` runs when a new socket starts (nothing on screen is current until
 * its snapshot); `onOpen` when one is open.
 */
export function createLive({ pair, onMessage, onConnecting, onOpen }) {
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  const key = () => `${pair().symbol} ${pair().interval}`;

  function subscribe(s) {
    s.send(JSON.stringify({ type: 'subscribe', ...pair() }));
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    const url = new URL('/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = new URLSearchParams(pair());
    const s = new WebSocket(url);
    const asked = key();
    socket = s;
    onConnecting();

    s.addEventListener('open', () => {
      // The user switched while the socket was opening: ask for what is on screen now.
      if (asked !== key()) subscribe(s);
      onOpen();
    });
    s.addEventListener('message', (ev) => {
      if (s !== socket) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      onMessage(msg);
    });
    // 'error' is always followed by 'close', so only 'close' schedules the retry.
    s.addEventListener('close', () => {
      if (s !== socket) return;
      socket = null;
      scheduleReconnect();
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
    /** A snapshot arrived: the next failure starts the backoff afresh. */
    settled() {
      attempt = 0;
    },
  };
}
