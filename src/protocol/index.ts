// Shared by trainer (Node), extension host (Node) and webview (browser): schemas, types, constants.
export * from './config';
export * from './messages';
