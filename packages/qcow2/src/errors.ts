/**
 * Base class of every error this package throws on purpose. `code` is stable
 * and meant for programs; `offset` and `field` say where in the image file the
 * problem is, when the problem is in the file.
 *
 * The package has no dependencies, so this does not extend hv-core's
 * `TypevisorError`; it has the same `code` shape so callers can treat both
 * alike.
 */
export class Qcow2Error extends Error {
  /** Stable machine-readable error code, e.g. `QCOW2_BAD_MAGIC`. */
  readonly code: string;
  /** Byte offset in the image (or data) file the problem was found at, if any. */
  readonly offset: number | undefined;
  /** Name of the header field or structure at fault (qcow2 spec name), if any. */
  readonly field: string | undefined;

  /**
   * @param code - stable machine-readable code
   * @param message - what went wrong, for people
   * @param where - file offset and field name, when the problem is in the file
   */
  constructor(code: string, message: string, where: { offset?: number; field?: string } = {}) {
    const at = [where.field !== undefined ? `field ${where.field}` : "", where.offset !== undefined ? `offset 0x${where.offset.toString(16)}` : ""].filter(Boolean).join(", ");
    super(at ? `${message} (${at})` : message);
    this.name = new.target.name;
    this.code = code;
    this.offset = where.offset;
    this.field = where.field;
  }
}

/** The image is structurally invalid: a field is out of range or structures overlap. */
export class Qcow2FormatError extends Qcow2Error {}

/** The image uses a feature this library does not implement (an unknown incompatible bit, for example). */
export class Qcow2UnsupportedError extends Qcow2Error {}

/** A request was invalid: out of range, on a read-only image, after close. */
export class Qcow2UsageError extends Qcow2Error {}
