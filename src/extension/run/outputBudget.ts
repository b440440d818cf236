// What the trainer says (its log events, the acks of every client's commands) goes to the output
// channel one line each, but not without bound: a trainer in a loop, or another token holder sending
// thousands of commands, would otherwise write a line per event into a channel the user reads. Past
// the budget of a window the lines are counted, and the count is written when lines flow again.
export class OutputBudget {
  private windowStart = -Infinity;
  private used = 0;
  private suppressed = 0;

  constructor(
    private readonly write: (line: string) => void,
    private readonly linesPerWindow = 100,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  line(text: string): void {
    const t = this.now();
    if (t - this.windowStart >= this.windowMs) {
      this.reportSuppressed();
      this.windowStart = t;
      this.used = 0;
    }
    if (this.used < this.linesPerWindow) {
      this.used++;
      this.write(text);
    } else {
      this.suppressed++;
    }
  }

  /** Writes how many lines were held back, if any (also when the run's session ends). */
  reportSuppressed(): void {
    if (!this.suppressed) return;
    this.write(`… ${this.suppressed} more trainer message${this.suppressed === 1 ? '' : 's'} not shown here (more than ${this.linesPerWindow} in ${this.windowMs / 1000} s); the run directory's events.jsonl and commands.jsonl have every one`);
    this.suppressed = 0;
  }
}
