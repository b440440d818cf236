// Shared by trainer (Node), extension host (Node) and webview (browser): schemas, types, constants.
export * from './config';
export * from './limits';
export * from './messages';
export * from './runFiles';
export * from './format';
export * from './upgrade';
export * from './runView';
