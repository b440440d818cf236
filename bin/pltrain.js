#!/usr/bin/env node
// `pltrain` entry point: the bundled trainer CLI (built by `npm run build`).
require('../dist/trainer.js');
