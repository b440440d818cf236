// DampingFloorWatch: one warning per episode at κ = 1/δ, a note when the unit leaves the floor.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { UnitStats } from '../../src/protocol';
import { kappaAtDampingFloor } from '../../src/protocol';
import { DampingFloorWatch, dampedKappa } from '../../src/trainer/pl';

const unit = (id: number, kappa: number, flags: Partial<UnitStats> = {}): UnitStats => ({ id, mu: 1, lf: kappa, kappa, frozen: false, pruned: false, ...flags });

test('smooth damping: κ = λ_max/(λ_min + δ·λ_max) ≤ 1/δ, exactly 1/δ when singular, at the floor iff λ_min ≤ δ·λ_max', () => {
  const delta = 1e-6;
  const atFloor = (kappa: number) => kappaAtDampingFloor(kappa, delta);
  assert.equal(dampedKappa(5.7, 0, delta), 1 / delta, 'λ_min = 0');
  assert.equal(dampedKappa(0, 0, delta), 1 / delta, 'zero kernel');
  assert.ok(Math.abs(dampedKappa(5.7, 2.3, delta) - 5.7 / (2.3 + delta * 5.7)) <= 1e-15 * 5.7 / 2.3, 'closed form');
  assert.ok(dampedKappa(5.7, 5.7, delta) < 1, 'a perfectly conditioned kernel reads 1/(1+δ)');
  assert.ok(atFloor(dampedKappa(5.7, 0, delta)), 'λ_min = 0');
  assert.ok(atFloor(dampedKappa(5.7, 0.999 * 5.7e-6, delta)), 'λ_min just below δ·λ_max');
  assert.ok(!atFloor(dampedKappa(5.7, 1.001 * 5.7e-6, delta)), 'λ_min just above δ·λ_max');
  assert.ok(!atFloor(dampedKappa(5.7, 1, delta)));
  assert.ok(!kappaAtDampingFloor(null, delta), 'not measurable is not at the floor');
  // Differentiable at a singular kernel: the slope in λ_min is −λ_max/(δ·λ_max)² = −1/(δ²·λ_max), not 0.
  const h = 1e-12;
  const slope = (dampedKappa(5.7, h, delta) - dampedKappa(5.7, 0, delta)) / h;
  assert.ok(Math.abs(slope + 1 / (delta * delta * 5.7)) <= 1e-3 / (delta * delta * 5.7), `slope ${slope}`);
});

test('one entry per episode; leaving by recovery, freeze or prune is reported once; frozen or pruned units never enter', () => {
  const w = new DampingFloorWatch(1e-3);
  assert.deepEqual(w.observe([unit(0, 3), unit(1, 1000), unit(2, 1000, { frozen: true }), unit(3, 1000, { pruned: true })]), { entered: [unit(1, 1000)], left: [] });
  assert.deepEqual(w.observe([unit(0, 3), unit(1, 1000)]), { entered: [], left: [] }, 'still there: no repeat');
  assert.deepEqual(w.observe([unit(0, 1000), unit(1, 40)]).left, [unit(1, 40)]);
  assert.deepEqual(w.observe([unit(0, 1000, { frozen: true }), unit(1, 1000)]), { entered: [unit(1, 1000)], left: [unit(0, 1000, { frozen: true })] });
  assert.deepEqual(w.observe([unit(0, 1000), unit(1, 1000)]).entered, [unit(0, 1000)], 'unfrozen at the floor: a new episode');
});
