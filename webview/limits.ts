// Bounds of the charts' caches, in a module without chart.js (the tests read them in Node).

/**
 * Resolvers kept per chart between option merges. chart.js keys them by the array of option scopes
 * they read, and builds a fresh array for some lookups on every update (its chart-level scopes, each
 * dataset's animation and element scopes): ~50 new entries per update for a 16-line chart, never
 * looked up again. Past this many the cache is dropped, as chart.js itself did on every update; what is
 * still used is rebuilt on its next lookup. (A 16-line chart holds ~250 right after a merge.)
 */
export const RESOLVER_CACHE_LIMIT = 1000;
