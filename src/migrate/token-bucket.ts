/**
 * A token bucket: `rate` tokens (bytes) a second, at most `burst` saved up. A request larger than the burst goes
 * once the bucket is full and leaves it in debt, so the average holds whatever the request sizes.
 */
export class TokenBucket {
  private tokens: number;
  private at = Date.now();

  constructor(
    private rate: number,
    private burst: number,
  ) {
    this.tokens = burst;
  }

  /** A new rate (and burst): what was saved up is kept, up to the new burst. */
  reset(rate: number, burst: number): void {
    this.refill();
    this.rate = rate;
    this.burst = burst;
    this.tokens = Math.min(this.tokens, burst);
  }

  get currentRate(): number {
    return this.rate;
  }

  /** Takes `n` tokens and returns 0, or returns how many ms to wait before asking again. */
  take(n: number): number {
    this.refill();
    const need = Math.min(n, this.burst);
    if (this.tokens >= need) {
      this.tokens -= n;
      return 0;
    }
    return ((need - this.tokens) / this.rate) * 1000;
  }

  /** Tokens taken for work that was not done (a chunk's holes). */
  giveBack(n: number): void {
    this.tokens = Math.min(this.burst, this.tokens + n);
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = now;
  }
}
