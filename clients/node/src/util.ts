/** @internal @module */

/** Monotonic milliseconds. */
export const now = (): number => performance.now();

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** `delay` with ±50 % jitter. */
export const jitter = (delay: number): number => delay * (0.5 + Math.random());

/** Bytes of a string (UTF-8) or a byte array. */
export const toBuffer = (v: Buffer | Uint8Array | string): Buffer =>
  typeof v === "string" ? Buffer.from(v, "utf8") : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
