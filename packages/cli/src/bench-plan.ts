/**
 * qemu-img bench's request offsets (qemu-img.c bench_cb): the first request at `offset`, each next
 * one `step` further, wrapped modulo (image size − buffer size), or always 0 when the buffer is
 * not smaller than the image.
 */
export function nextBenchOffset(offset: number, step: number, imageSize: number, bufferSize: number): number {
  if (imageSize <= bufferSize) return 0;
  return (offset + step) % (imageSize - bufferSize);
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
