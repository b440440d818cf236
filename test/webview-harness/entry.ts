// The panel as the browser tests and benchmarks run it: the production panel (webview/panel.ts),
// started the same way, with its controller's model and charts readable from the page as
// `window.__plTrainer`, so a test can read chart.js's state, which no public behaviour shows.
import { startPanel } from '../../webview/panel';

const controller = startPanel();
(window as unknown as { __plTrainer: unknown }).__plTrainer = { model: controller.model, charts: controller.charts };
