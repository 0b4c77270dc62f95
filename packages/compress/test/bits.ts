/** A little LSB-first bit writer for hand-made deflate streams (Huffman codes go MSB first). */
export class BitWriter {
  private bytes: number[] = [];
  private acc = 0;
  private n = 0;

  /** Writes `count` bits of `value`, least significant first (header fields, extra bits). */
  bits(value: number, count: number): this {
    for (let i = 0; i < count; i++) this.push((value >>> i) & 1);
    return this;
  }

  /** Writes a Huffman code of `length` bits, most significant first. */
  code(value: number, length: number): this {
    for (let i = length - 1; i >= 0; i--) this.push((value >>> i) & 1);
    return this;
  }

  private push(bit: number): void {
    this.acc |= bit << this.n;
    this.n += 1;
    if (this.n === 8) {
      this.bytes.push(this.acc);
      this.acc = 0;
      this.n = 0;
    }
  }

  finish(): Uint8Array {
    if (this.n > 0) this.bytes.push(this.acc);
    return Uint8Array.from(this.bytes);
  }
}
