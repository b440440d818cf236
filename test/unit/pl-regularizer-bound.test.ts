// Issue 11 item 3, "bound the difference and show the bound measured": the trainer's regularizer gradient
// is Hellmann–Feynman along the last measurement's extreme eigenvectors. bert-encoder and vgg follow u
// since 2026-12-06 (their tapped probe pass); switch-transformer follows its expert inputs x, its
// directions u and the routing probabilities p_top since the same day (its probe pass inside the step,
// the top-1 choices held), so on every family only the eigenvectors are held. This file measures how far
// the gradient the trainer follows is from the gradient of the κ̄ it reports, and holds it to a bound that
// a wrong gradient would break.
//
// (a) the trainer's gradient: tf.variableGrads of the same `modelKappaTf` that trainStep adds α times
//     (its variables: every variable the regularizer reaches; the rest get 0);
// (b) the gradient of the reported κ: central differences of measure() → modelKappa(), which recomputes
//     u, the routing and the probe quantities from the perturbed weights (float32 kernels, float64
//     eigen-solve; the families' own tests hold those kernels to float64 references to 1e-3 or better).
// Both are compared in a random Gaussian projection (k directions over all variables at once):
// (a)·d_j exactly, (b)·d_j by central differences along d_j. For Gaussian d the projected cosine and
// relative norm difference estimate the full ones (their spread shrinks like 1/√k).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { imageTaskData, loadBuiltin } from '../../src/trainer/data';
import { BertEncoder } from '../../src/trainer/models/bertEncoder';
import { SwitchTransformerLm } from '../../src/trainer/models/switchTransformer';
import { VggNet } from '../../src/trainer/models/vgg';
import type { Batch, PlModel, TaskData } from '../../src/trainer/models/types';
import { loadTextData, textTaskData, type TextTaskData } from '../../src/trainer/textData';
import { mulberry32 } from '../support/prng';

let images: TaskData;
let corpus: TextTaskData;

function config(over: object): TrainingConfig {
  const r = parseTrainingConfig(over);
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

const switchConfig = (seed: number) =>
  config({ model: { family: 'switch-transformer', experts: 4, dModel: 8, layers: 2, hiddenUnits: 8, contextLength: 8 }, data: { source: 'text' }, learningRate: 0.01, monitor: { probeSize: 8 }, seed });

before(async () => {
  await tf.setBackend('cpu');
  images = imageTaskData(loadBuiltin());
  corpus = loadTextData(switchConfig(1), '.');
});

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, k) => from + k);

/** What the comparison needs from a family: the model, every variable, and the trainer's κ̃. */
interface Subject {
  model: PlModel & { modelKappa(): number | undefined };
  vars: tf.Variable[];
  /** How many of `vars` (from the end) are the units' own parameters (experts, heads, channel groups). */
  unitVarCount: number;
  kappaTf: () => tf.Scalar;
  data: TaskData;
  /** Moves the point off a kink every direction would cross (called after the training steps). */
  makeGeneric?: (seed: number) => void;
}

const families: Record<string, (seed: number) => Subject> = {
  'switch-transformer': (seed) => {
    const m = new SwitchTransformerLm(tf, switchConfig(seed), corpus);
    const all = Array.from({ length: m.units }, (_, e) => e);
    const own = all.flatMap((e) => m.expertVars(e));
    return { model: m, vars: [...m.sharedVars(), ...own], unitVarCount: own.length, kappaTf: () => m.modelKappaTf(all), data: corpus };
  },
  'bert-encoder': (seed) => {
    const c = config({ model: { family: 'bert-encoder', experts: 2, dModel: 4, layers: 2, hiddenUnits: 4 }, learningRate: 0.01, monitor: { probeSize: 4 }, seed });
    const m = new BertEncoder(tf, c, images);
    const all = Array.from({ length: m.units }, (_, h) => h);
    const own = all.flatMap((h) => m.headVars(h));
    return { model: m, vars: [...m.sharedVars(), ...own], unitVarCount: own.length, kappaTf: () => m.modelKappaTf(all, new Set()), data: images };
  },
  vgg: (seed) => {
    const c = config({ model: { family: 'vgg', experts: 2, hiddenUnits: 2, layers: 2 }, learningRate: 0.01, monitor: { probeSize: 4 }, seed });
    const m = new VggNet(tf, c, images);
    const all = Array.from({ length: m.units }, (_, g) => g);
    const own = all.flatMap((g) => m.groupVars(g));
    // After a few Adam steps some conv biases sit within float32 noise of 0, and on the zero background a
    // pre-activation equals its bias: a ReLU kink at the point itself. Random biases of ±0.02…0.1 move
    // it off (as model-vgg.test.ts does for its finite differences).
    const makeGeneric = (s: number) =>
      m.layers.flat().forEach((p, k) => p.b.assign(tf.tidy(() => tf.mul(tf.randomUniform(p.b.shape, 0.02, 0.1, 'float32', s * 100 + k), tf.sign(tf.randomNormal(p.b.shape, 0, 1, 'float32', s * 100 + 50 + k))))));
    return { model: m, vars: [m.denseW, m.denseB, ...own], unitVarCount: own.length, kappaTf: () => m.modelKappaTf(all, new Set()), data: images, makeGeneric };
  },
};

interface Measured {
  family: string;
  seed: number;
  kappa: number;
  /** Projections on the k directions: the trainer's gradient and the reported κ's (central differences). */
  trainer: Float64Array;
  reported: Float64Array;
  /** The trainer's gradient per variable (flattened), to build wrong gradients from. */
  grads: Float64Array[];
  directions: Float64Array[][];
  /** Directions left out: the two step sizes disagreed (a ReLU, pool or routing switch crossed). */
  discarded: number;
}

function gaussian(rnd: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
}

const DIRECTIONS = Number(process.env.BOUND_DIRECTIONS ?? 32);

/**
 * `over`: 'all' draws directions over every variable; 'units' only over the units' own parameters (the
 * rest held), which compares the gradients where the trainer's regularizer acts on every family.
 */
function measureOne(family: string, seed: number, over: 'all' | 'units'): Measured {
  const s = families[family](seed);
  const m = s.model;
  const none = new Set<number>();
  m.setProbe(s.data.batch(tf, 'train', range(0, family === 'switch-transformer' ? 8 : 4)));
  // A few plain steps off the initialization (α = 0: no measurement needed in between).
  const all = Array.from({ length: m.units }, (_, e) => e);
  for (let i = 0; i < 4; i++) {
    const b: Batch = s.data.batch(tf, 'train', range(16 + i * 16, 16));
    m.trainStep(b, { alpha: 0, trainable: all, pruned: none });
    tf.dispose([b.x, b.y]);
  }
  s.makeGeneric?.(seed);
  m.measure(none, none);
  const kappa = m.modelKappa()!;
  const { value, grads } = tf.variableGrads(s.kappaTf, s.vars);
  assert.ok(Math.abs(value.dataSync()[0] - kappa) <= 1e-3 * kappa, `${family}: κ̃ ${value.dataSync()[0]} at fresh eigenvectors is the reported κ ${kappa}`);
  const gradArrays = s.vars.map((v) => (grads[v.name] ? Float64Array.from(grads[v.name].dataSync()) : new Float64Array(v.size)));
  tf.dispose([value, ...Object.values(grads)]);
  const start = s.vars.map((v) => Float32Array.from(v.dataSync()));
  const rnd = mulberry32(1000 + seed);
  const reportedAt = (d: Float64Array[], step: number): { kappa: number; realized: Float64Array[] } => {
    const realized = s.vars.map((v, a) => {
      const moved = Float32Array.from(start[a], (w, k) => w + step * d[a][k]);
      v.assign(tf.tensor(moved, v.shape));
      return Float64Array.from(moved, (w, k) => w - start[a][k]); // the float32-rounded move
    });
    m.measure(none, none);
    return { kappa: m.modelKappa()!, realized };
  };
  const central = (d: Float64Array[], step: number) => {
    const up = reportedAt(d, step);
    const down = reportedAt(d, -step);
    // the direction as realized in float32, so rounding of the weights does not bias the projection
    const dot = up.realized.reduce((acc, r, a) => acc + r.reduce((t, x, k) => t + (x - down.realized[a][k]) * gradArrays[a][k], 0), 0);
    return { fd: (up.kappa - down.kappa) / (2 * step), trainer: dot / (2 * step) };
  };
  const trainer: number[] = [];
  const reported: number[] = [];
  const directions: Float64Array[][] = [];
  let discarded = 0;
  for (let j = 0; j < DIRECTIONS; j++) {
    const firstUnitVar = s.vars.length - s.unitVarCount;
    const d = s.vars.map((v, a) => (over === 'all' || a >= firstUnitVar ? Float64Array.from({ length: v.size }, () => gaussian(rnd)) : new Float64Array(v.size)));
    // Steps per coordinate (d has unit variance): small enough that few directions cross a ReLU, pool or
    // routing switch, large enough that float32 round-off of the measured κ stays near 1 %.
    const coarse = central(d, 1e-4);
    const fine = central(d, 3e-5);
    if (Math.abs(coarse.fd - fine.fd) > 0.1 * Math.max(Math.abs(fine.fd), Math.abs(fine.trainer), 1e-3 * kappa)) {
      discarded++;
      continue;
    }
    trainer.push(fine.trainer);
    reported.push(fine.fd);
    directions.push(d);
  }
  s.vars.forEach((v, a) => v.assign(tf.tensor(start[a], v.shape)));
  m.dispose();
  return { family, seed, kappa, trainer: Float64Array.from(trainer), reported: Float64Array.from(reported), grads: gradArrays, directions, discarded };
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, x, i) => s + x * b[i], 0);
const cosine = (a: ArrayLike<number>, b: ArrayLike<number>) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
const relativeDifference = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / dot(b, b));
/** A gradient vector (per variable) projected on the kept directions. */
const project = (g: Float64Array[], directions: Float64Array[][]) => Float64Array.from(directions, (d) => g.reduce((s, arr, a) => s + dot(arr, d[a]), 0));

/**
 * The bound per family and direction set: the least cosine every measured seed must reach. Set from the
 * measurements (docs/method.md, "the bound, measured"), with room for the projection's spread (32
 * directions). Switch (since it follows x, u and p_top) also bounds the relative difference ‖a − b‖/‖b‖
 * (measured ≤ 0.004 over all variables, ≤ 0.017 over the experts'; before, with them held, its cosine over
 * all variables was 0.12–0.47 and the difference 0.93–1.00).
 */
const BOUND: Record<string, { all: number; units: number; difference?: { all: number; units: number } }> = {
  'switch-transformer': { all: 0.99, units: 0.99, difference: { all: 0.05, units: 0.1 } },
  'bert-encoder': { all: 0.75, units: 0.8 },
  vgg: { all: 0.75, units: 0.5 },
};

const SEEDS = process.env.BOUND_DEBUG ? [Number(process.env.BOUND_DEBUG)] : [1, 2, 3, 4];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

for (const family of Object.keys(families)) {
  test(`${family}: the trainer's regularizer gradient (${family === 'switch-transformer' ? 'x, u and p_top' : 'u'} followed) against the gradient of the reported κ (recomputed)`, () => {
    for (const over of ['all', 'units'] as const) {
      const cosines: number[] = [];
      const differences: number[] = [];
      const bound = BOUND[family][over];
      const droppedCosines: number[] = [];
      let unmeasurable = 0;
      for (const seed of SEEDS) {
        const r = measureOne(family, seed, over);
        if (r.trainer.length < DIRECTIONS / 2) {
          // Most directions cross a switch within 3e-5 per coordinate (or λ_min is nearly degenerate):
          // the reported κ has no usable gradient at this point. Said, and not counted.
          console.log(`${family} (${over} variables) seed ${seed}: not differentiable here, ${r.discarded} of ${DIRECTIONS} directions crossed a switch`);
          unmeasurable++;
          continue;
        }
        const cos = cosine(r.trainer, r.reported);
        const rel = relativeDifference(r.trainer, r.reported);
        // Wrong gradients, in the same projection: a sign flip, and the largest variable's term dropped.
        const flipped = cosine(r.trainer.map((x) => -x), r.reported);
        // (the largest among the variables the directions move, so that dropping it shows in the projection)
        const norms = r.grads.map((g, a) => (r.directions.some((d) => d[a].some((x) => x !== 0)) ? dot(g, g) : -1));
        const largest = norms.indexOf(Math.max(...norms));
        const dropped = cosine(project(r.grads.map((g, a) => (a === largest ? new Float64Array(g.length) : g)), r.directions), r.reported);
        console.log(`${family} (${over} variables) seed ${seed}: κ ${r.kappa.toFixed(2)}, cosine ${cos.toFixed(3)}, relative difference ${rel.toFixed(3)}, ${r.discarded} directions discarded; sign flipped: cosine ${flipped.toFixed(3)}; largest variable's term dropped: cosine ${dropped.toFixed(3)}`);
        cosines.push(cos);
        differences.push(rel);
        droppedCosines.push(dropped);
        assert.ok(cos >= bound, `${family} (${over} variables) seed ${seed}: cosine ${cos} below the bound ${bound}`);
        const maxDifference = BOUND[family].difference?.[over];
        if (maxDifference !== undefined) assert.ok(rel <= maxDifference, `${family} (${over} variables) seed ${seed}: relative difference ${rel} above ${maxDifference}`);
        assert.ok(flipped < bound, 'a sign-flipped gradient breaks the bound');
      }
      assert.ok(unmeasurable <= 1, `${family}: ${unmeasurable} of ${SEEDS.length} seeds without a usable gradient`);
      // A gradient with its largest term dropped agrees measurably worse (where the bound means agreement).
      if (bound >= 0.5) assert.ok(median(droppedCosines) < median(cosines) - 0.05, `${family} (${over} variables): dropping a term left the cosine at ${median(droppedCosines)} (true gradient ${median(cosines)})`);
      console.log(`${family} (${over} variables): cosine min ${Math.min(...cosines).toFixed(2)} median ${median(cosines).toFixed(2)}; relative difference median ${median(differences).toFixed(2)} max ${Math.max(...differences).toFixed(2)}`);
    }
  });
}
