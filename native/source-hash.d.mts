/** Hex sha256 of native/'s sources (see source-hash.mjs). */
export function nativeSourceHash(): Promise<string>;
