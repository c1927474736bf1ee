/**
 * Base class of every error typevisor throws on purpose. The `code` is stable
 * and meant for programs; the message is meant for people and names what is
 * wrong and where.
 */
export class TypevisorError extends Error {
  /** Stable machine-readable error code, e.g. `PLUGIN_MISSING`. */
  readonly code: string;

  /**
   * @param code - stable machine-readable code
   * @param message - what went wrong, naming the component and location
   */
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
