// A minimal typed event, so the run lifecycle stays free of the `vscode` module and unit-testable in Node.
export type Listener<T> = (value: T) => void;

export class Signal<T> {
  private listeners = new Set<Listener<T>>();

  on(listener: Listener<T>): { dispose(): void } {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }

  /** `on` as a function value, shaped like vscode's `Event<T>` (`signal.event(listener)` subscribes). */
  readonly event = (listener: Listener<T>): { dispose(): void } => this.on(listener);

  fire(value: T): void {
    for (const l of [...this.listeners]) l(value);
  }

  clear(): void {
    this.listeners.clear();
  }
}
