import { formatFixed } from './c-format.js';

/**
 * qemu's simple progress printer (util/qemu-progress.c): `    (12.34/100%)\r` on stdout each
 * time the value moves by more than `minSkip` points or reaches 0 or 100, then a line break at
 * the end.
 */
export class Progress {
  readonly #emit: (text: string) => void;
  readonly #enabled: boolean;
  readonly #minSkip: number;
  #current = 0;
  #lastPrint = 0;

  constructor(emit: (text: string) => void, enabled: boolean, minSkip: number) {
    this.#emit = emit;
    this.#enabled = enabled;
    this.#minSkip = minSkip;
  }

  /** Sets the value (0..100) and prints it when qemu would. */
  set(value: number): void {
    if (!this.#enabled) return;
    // qemu keeps the value in a float.
    const current = Math.fround(Math.min(100, Math.max(0, value)));
    this.#current = current;
    if (
      current > this.#lastPrint + this.#minSkip ||
      current < this.#lastPrint - this.#minSkip ||
      current === 0 ||
      current === 100
    ) {
      this.#lastPrint = current;
      this.#emit(`    (${formatFixed(current, 2)}/100%)\r`);
    }
  }

  get current(): number {
    return this.#current;
  }

  end(): void {
    if (this.#enabled) this.#emit('\n');
  }
}
