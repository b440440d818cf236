// Page side of bench/chart.ts, evaluated in the panel's page (plain JS: it is sent as source text).
// Also loaded in Node by bench/chart.ts, which validates a sample of the events it makes against the
// protocol schemas, so the benchmark feeds exactly what a trainer would send.
(function (global) {
  /** A seeded MoE run with `experts` units measured on every step: the worst case the panel must draw. */
  function createRun(experts, totalSteps, runId) {
    let a = 12345;
    const random = () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    let seq = 0;
    let step = 0;
    const start = 1735732800000;
    const lf = Array.from({ length: experts }, (_, i) => 20 + 5 * i);
    const logKappa = Array.from({ length: experts }, (_, i) => Math.log(1e3 * (1 + i)));
    const summary = (s) => ({ runId, runDir: '/bench/.pltrain/runs/' + runId, state: 'running', step: s, totalSteps, connected: true });
    return {
      runId,
      snapshot() {
        const config = { name: 'bench', steps: totalSteps, frozenExperts: [], model: { family: 'moe-mlp', experts, hiddenUnits: 32 }, monitor: { every: 1 } };
        const hello = { type: 'hello', seq: seq++, protocol: 2, runId, pid: 1, backend: { name: 'wasm', gpu: false, detail: 'benchmark' }, startedAt: start, totalSteps, unitCount: experts, unitName: 'expert', alpha: 0.01, taskMetric: 'accuracy', config };
        const running = { type: 'state', seq: seq++, state: 'running', step: 0, time: start };
        return { type: 'snapshot', run: summary(0), events: [hello, running], commands: [] };
      },
      /** The next `n` metrics events, every one carrying all experts (monitor.every = 1). */
      next(n) {
        const out = new Array(n);
        for (let k = 0; k < n; k++) {
          step++;
          const stats = new Array(experts);
          let sum = 0;
          for (let i = 0; i < experts; i++) {
            // κ: a random walk in log space that settles, with rare spikes (what min/max must keep).
            logKappa[i] += 0.02 * (random() - 0.5) - 1e-6 * (logKappa[i] - 3);
            const kappa = Math.exp(logKappa[i]) * (random() < 1e-4 ? 50 : 1);
            const l = lf[i] * (1 + 0.05 * (random() - 0.5));
            stats[i] = { id: i, mu: l / kappa, lf: l, kappa, frozen: false, pruned: false };
            sum += kappa;
          }
          const taskLoss = 0.3 + 2 * Math.exp(-step / 5000) + 0.05 * random();
          const regularizer = sum / experts;
          out[k] = {
            type: 'metrics', seq: seq++, step, time: start + step * 5, loss: taskLoss + 0.01 * regularizer, taskLoss, regularizer, alpha: 0.01,
            taskMetric: Math.min(0.99, 0.1 + 0.8 * (1 - Math.exp(-step / 3000))), stepsPerSec: 200, plRatio: 1 + random(), units: stats,
          };
        }
        return out;
      },
      get step() {
        return step;
      },
    };
  }

  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));

  /** Times every MetricChart.draw (chart.js `update('none')` and its canvas drawing) into `timer.ms`. */
  function timeDraws(timer) {
    for (const chart of Object.values(global.__plTrainer.charts)) {
      if (chart.__benchOriginalDraw) continue;
      chart.__benchOriginalDraw = chart.draw;
      chart.draw = function () {
        const t = performance.now();
        chart.__benchOriginalDraw.call(chart);
        timer.ms += performance.now() - t;
      };
    }
  }

  const bench = {
    createRun,
    run: undefined,
    timer: { ms: 0 },

    start(experts, totalSteps) {
      bench.run = createRun(experts, totalSteps, 'bench-chart');
      timeDraws(bench.timer);
      window.postMessage(bench.run.snapshot(), '*');
    },

    /** Feeds `count` steps in messages of `batch` events, waiting for the frame that draws each. */
    async ingest(count, batch) {
      const batchToFrame = [];
      const t0 = performance.now();
      for (let done = 0; done < count; done += batch) {
        const events = bench.run.next(Math.min(batch, count - done));
        const t = performance.now();
        window.postMessage({ type: 'events', runId: bench.run.runId, events }, '*');
        await nextFrame();
        await nextFrame();
        batchToFrame.push(performance.now() - t);
      }
      return { ms: performance.now() - t0, batchToFrame };
    },

    /**
     * `frames` animation frames of one kind of redraw. `append`: a live run delivering `perSecond`
     * steps/s (each frame posts the steps due, the panel draws them on the next frame). `zoom`: the x
     * range shrinks from everything to its last 1 %. `pan`: a window of 10 % slides across the run.
     * Per frame: chart redraw time (all charts) and the interval to the previous frame.
     */
    async frames(kind, frames, perSecond) {
      const charts = Object.values(global.__plTrainer.charts).map((c) => c.chart);
      const first = 1;
      const last = bench.run.step;
      const span = last - first;
      const redraw = [];
      const interval = [];
      let previous = await nextFrame();
      let due = 0;
      bench.timer.ms = 0;
      for (let f = 0; f <= frames; f++) {
        const now = await nextFrame();
        if (f > 0) {
          interval.push(now - previous);
          if (kind === 'append') redraw.push(bench.timer.ms);
        }
        previous = now;
        bench.timer.ms = 0;
        if (f === frames) break;
        if (kind === 'append') {
          due += perSecond / 60;
          const n = Math.floor(due);
          due -= n;
          if (n > 0) window.postMessage({ type: 'events', runId: bench.run.runId, events: bench.run.next(n) }, '*');
        } else {
          const width = kind === 'zoom' ? span * (1 - 0.99 * ((f + 1) / frames)) : span * 0.1;
          const min = kind === 'zoom' ? last - width : first + (span - width) * (f / Math.max(1, frames - 1));
          const t = performance.now();
          for (const chart of charts) chart.zoomScale('x', { min, max: min + width }, 'none');
          redraw.push(performance.now() - t);
        }
      }
      if (kind !== 'append') for (const chart of charts) chart.resetZoom('none');
      return { redraw, interval };
    },

    /** What the panel holds now. */
    stored() {
      const model = global.__plTrainer.model;
      const kappa0 = model.series.get('kappa:0').raw;
      let points = 0;
      for (const s of model.series.values()) points += s.raw.length + s.smoothed.length;
      const expertChart = global.__plTrainer.charts.expert.chart;
      return {
        step: model.view.step,
        series: model.series.size,
        perSeries: kappa0.length,
        pointObjects: points,
        firstStep: kappa0[0].x,
        lastStep: kappa0[kappa0.length - 1].x,
        expertLines: expertChart.data.datasets.length,
        decimated: expertChart.data.datasets.every((d) => !!d._decimated),
        drawnPerLine: expertChart.data.datasets[0].data.length,
        canvas: { width: expertChart.width, height: expertChart.height },
      };
    },
  };
  global.__benchChart = bench;
})(typeof window !== 'undefined' ? window : globalThis);
