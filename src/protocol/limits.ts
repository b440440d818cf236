// Every bound on what a person may set, once: the config schema, the steering commands, the trainer's
// checks, the panel's α field, the input boxes and the code lenses all read them from here.
import { z } from 'zod';

/** α, the weight of the condition-number regularizer: in a config file and in `setAlpha`. */
export const ALPHA_MIN = 0;
export const ALPHA_MAX = 1e6;

/** Prunable units a model may have (`model.experts`): the PL method compares at least two. */
export const MIN_UNITS = 2;
export const MAX_UNITS = 64;

/** α as the config and `setAlpha` accept it: finite, within [ALPHA_MIN, ALPHA_MAX]. */
export const AlphaSchema = z
  .number({ invalid_type_error: 'α must be a number' })
  .finite('α must be a finite number')
  .min(ALPHA_MIN, `α must be ≥ ${ALPHA_MIN}`)
  .max(ALPHA_MAX, `α must be ≤ ${ALPHA_MAX.toExponential(0)}`);

/** A unit's index in `freeze`/`unfreeze`; whether the run has that unit is the trainer's check. */
export const UnitIdSchema = z
  .number()
  .int('a unit is named by its integer index')
  .min(0, 'a unit index is ≥ 0')
  .max(MAX_UNITS - 1, `a unit index is < ${MAX_UNITS}`);

/** Why `value` is not an acceptable α, or undefined when it is (the reason a person reads). */
export function alphaProblem(value: number): string | undefined {
  const r = AlphaSchema.safeParse(value);
  return r.success ? undefined : r.error.issues[0].message;
}

/**
 * The largest data file the trainer reads (a text corpus, one IDX file once unzipped): it is read
 * whole into memory, so a bound keeps a wrong `data.path` (a disk image, /dev/zero) from taking it all.
 */
export const MAX_DATA_FILE_BYTES = 256 * 1024 * 1024;
