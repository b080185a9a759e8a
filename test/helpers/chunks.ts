/** Test input cut into pieces, for parsers that must give the same result however bytes arrive. */

/** Cuts `bytes` at the given offsets (taken modulo length + 1; repeats give empty chunks). */
export function chunked(bytes: Buffer, cuts: number[]): Buffer[] {
  const offsets = cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const offset of offsets) {
    chunks.push(bytes.subarray(start, offset));
    start = offset;
  }
  chunks.push(bytes.subarray(start));
  return chunks;
}
