// What the Freeze/Unfreeze prompt asks and offers, from the run's state: the family's word for a unit
// ("Freeze which head?"), and only the units the command can apply to.
import { describeKappa, unitLabel, type RunView } from '../protocol';

export interface UnitPrompt {
  title: string;
  items: { label: string; description: string; value: number }[];
}

export function unitPrompt(view: RunView, kind: 'freeze' | 'unfreeze'): UnitPrompt {
  const candidates = view.units.filter((u) => (kind === 'freeze' ? !u.frozen && !u.pruned : u.frozen));
  return {
    title: `${kind === 'freeze' ? 'Freeze' : 'Unfreeze'} which ${view.unitName}?`,
    items: candidates.map((u) => ({ label: unitLabel(view.unitName, u.id), description: `${describeKappa(u.kappa)}${view.inactive(u) ? ' · inactive' : ''}`, value: u.id })),
  };
}
