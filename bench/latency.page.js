// Page side of bench/latency.ts, evaluated in the panel's page after the panel's own script, so its
// `message` listener runs after the panel's: an event counts as received once the panel has
// validated it and folded it into its model, and as drawn after the animation frame that drew it
// (our frame callback is queued behind the panel's render). Times are wall-clock milliseconds,
// performance.timeOrigin + performance.now() corrected to Date.now() at a tick of its millisecond.
(function () {
  let tick = Date.now();
  while (Date.now() === tick);
  tick = Date.now();
  const correction = tick - (performance.timeOrigin + performance.now());
  const clock = () => performance.timeOrigin + performance.now() + correction;
  const seen = new Set();
  const received = [];
  const drawn = [];
  window.addEventListener('message', (event) => {
    const message = event.data;
    if (!message || message.type !== 'events' || !Array.isArray(message.events)) return;
    const now = clock();
    const batch = [];
    for (const e of message.events) {
      if (e.type !== 'metrics' || seen.has(e.seq)) continue;
      seen.add(e.seq);
      received.push(now - e.time);
      batch.push(e.time);
    }
    if (batch.length) {
      requestAnimationFrame(() => {
        const t = clock();
        for (const sent of batch) drawn.push(t - sent);
      });
    }
  });
  window.__benchLatency = {
    results: () => ({ received, drawn, step: window.__plTrainer.model.view.step }),
  };
})();
