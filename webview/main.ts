// The metrics panel's script in VS Code: starts the panel (panel.ts) and nothing else.
import { startPanel } from './panel';

startPanel();
