// DampingFloorWatch: one warning per episode at κ = 1/δ, a note when the unit leaves the floor.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { UnitStats } from '../../src/protocol';
import { kappaAtDampingFloor } from '../../src/protocol';
import { DampingFloorWatch, dampedKappa } from '../../src/trainer/pl';

const unit = (id: number, kappa: number, flags: Partial<UnitStats> = {}): UnitStats => ({ id, mu: 1, lf: kappa, kappa, frozen: false, pruned: false, ...flags });

test('the floor is exactly what dampedKappa gives a singular kernel, and nothing below it', () => {
  const atFloor = (kappa: number) => kappaAtDampingFloor(kappa, 1e-6);
  assert.ok(atFloor(dampedKappa(5.7, 0, 1e-6)), 'λ_min = 0');
  assert.ok(atFloor(dampedKappa(5.7, 1e-9, 1e-6)), 'λ_min below δ·λ_max');
  assert.ok(!atFloor(dampedKappa(5.7, 1.001 * 5.7e-6, 1e-6)), 'λ_min just above δ·λ_max: κ ≈ 0.999/δ');
  assert.ok(!atFloor(dampedKappa(5.7, 1, 1e-6)));
});

test('one entry per episode; leaving by recovery, freeze or prune is reported once; frozen or pruned units never enter', () => {
  const w = new DampingFloorWatch(1e-3);
  assert.deepEqual(w.observe([unit(0, 3), unit(1, 1000), unit(2, 1000, { frozen: true }), unit(3, 1000, { pruned: true })]), { entered: [unit(1, 1000)], left: [] });
  assert.deepEqual(w.observe([unit(0, 3), unit(1, 1000)]), { entered: [], left: [] }, 'still there: no repeat');
  assert.deepEqual(w.observe([unit(0, 1000), unit(1, 40)]).left, [unit(1, 40)]);
  assert.deepEqual(w.observe([unit(0, 1000, { frozen: true }), unit(1, 1000)]), { entered: [unit(1, 1000)], left: [unit(0, 1000, { frozen: true })] });
  assert.deepEqual(w.observe([unit(0, 1000), unit(1, 1000)]).entered, [unit(0, 1000)], 'unfrozen at the floor: a new episode');
});
