/**
 * qemu-img 7.2's request offsets (qemu-img.c bench_cb): the first request at `offset`, each next
 * one `step` further, wrapped modulo the image size — so a request can run past the end of the
 * image and fail, as in qemu 7.2 (later versions wrap modulo size − buffer). `bufferSize` is
 * unused but kept for those versions' callers; an empty image (qemu divides by zero) gives 0.
 */
export function nextBenchOffset(offset: number, step: number, imageSize: number, _bufferSize: number): number {
  if (imageSize === 0) return 0;
  return (offset + step) % imageSize;
}

/** The offsets of `count` requests, in issue order. */
export function benchOffsets(count: number, start: number, step: number, imageSize: number, bufferSize: number): number[] {
  const offsets: number[] = [];
  let offset = start;
  for (let i = 0; i < count; i += 1) {
    offsets.push(offset);
    offset = nextBenchOffset(offset, step, imageSize, bufferSize);
  }
  return offsets;
}
