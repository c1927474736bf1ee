// A minimal WebAssembly binary writer (WebAssembly Core Specification 1.0,
// chapter 5, "Binary Format"): the sections a compiled region needs (types,
// imports, functions, exports, code) and a function body writer whose
// structured control flow tracks its nesting, so branches name their target
// block rather than a depth counted by hand. Bytes go into growable typed
// arrays: the block compiler writes megabytes of code while Linux boots.

/** Value type i32 (spec §5.3.1). */
export const I32 = 0x7f;
/** Value type i64. */
export const I64 = 0x7e;

/** Opcodes used by the block compiler (spec §5.4). */
export const OP = {
  unreachable: 0x00,
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  else: 0x05,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  brTable: 0x0e,
  return: 0x0f,
  call: 0x10,
  callIndirect: 0x11,
  drop: 0x1a,
  select: 0x1b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Load: 0x28,
  i32Load8U: 0x2d,
  i32Load16U: 0x2f,
  i32Store: 0x36,
  i32Store8: 0x3a,
  i32Store16: 0x3b,
  i32Const: 0x41,
  i64Const: 0x42,
  i32Eqz: 0x45,
  i32Eq: 0x46,
  i32Ne: 0x47,
  i32LtS: 0x48,
  i32LtU: 0x49,
  i32GtS: 0x4a,
  i32GtU: 0x4b,
  i32LeS: 0x4c,
  i32LeU: 0x4d,
  i32GeS: 0x4e,
  i32GeU: 0x4f,
  i64Ne: 0x52,
  i64GtU: 0x56,
  i32Popcnt: 0x69,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32Mul: 0x6c,
  i32And: 0x71,
  i32Or: 0x72,
  i32Xor: 0x73,
  i32Shl: 0x74,
  i32ShrS: 0x75,
  i32ShrU: 0x76,
  i32Rotl: 0x77,
  i32Rotr: 0x78,
  i64Add: 0x7c,
  i64Mul: 0x7e,
  i64ExtendI32S: 0xac,
  i64ExtendI32U: 0xad,
} as const;

/** Unsigned LEB128 (spec §5.2.2). */
export function uleb(v: number): number[] {
  const out: number[] = [];
  let x = v >>> 0;
  do {
    let b = x & 0x7f;
    x >>>= 7;
    if (x !== 0) b |= 0x80;
    out.push(b);
  } while (x !== 0);
  return out;
}

/** Signed LEB128 of an int32. */
export function sleb(v: number): number[] {
  const out: number[] = [];
  let x = v | 0;
  for (;;) {
    const b = x & 0x7f;
    x >>= 7;
    if ((x === 0 && (b & 0x40) === 0) || (x === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

/** Code as nested fragments: numbers are bytes, arrays hold fragments in order. */
export type Code = number | readonly Code[];

/** A growable byte buffer. */
export class ByteWriter {
  private buf = new Uint8Array(256);
  /** Bytes written. */
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    b.set(this.buf.subarray(0, this.length));
    this.buf = b;
  }

  /** Appends one byte. */
  byte(b: number): void {
    if (this.length === this.buf.length) this.room(1);
    this.buf[this.length++] = b;
  }

  /** Appends code fragments, flattened. */
  code(c: Code): void {
    if (typeof c === "number") this.byte(c);
    else for (let i = 0; i < c.length; i++) this.code(c[i]);
  }

  /** Appends bytes. */
  bytes(b: Uint8Array | readonly number[]): void {
    this.room(b.length);
    if (b instanceof Uint8Array) this.buf.set(b, this.length);
    else for (let i = 0; i < b.length; i++) this.buf[this.length + i] = b[i];
    this.length += b.length;
  }

  /** Appends an unsigned LEB128. */
  uleb(v: number): void {
    if (v >>> 0 < 0x80) this.byte(v);
    else this.bytes(uleb(v));
  }

  /** Appends `b` prefixed with its length (a vector of bytes, a section's body). */
  sized(b: Uint8Array): void {
    this.uleb(b.length);
    this.bytes(b);
  }

  /** A copy of the bytes written. */
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  /** The bytes written, and the buffer empties. */
  take(): Uint8Array {
    const r = this.result();
    this.length = 0;
    return r;
  }
}

function name(w: ByteWriter, s: string): void {
  w.sized(new TextEncoder().encode(s));
}

/** A structured-control label: the nesting level of its block. */
export interface Label {
  readonly level: number;
}

/** Writes one function body: locals, then code, with the nesting of blocks tracked. */
export class FunctionWriter {
  readonly code = new ByteWriter();
  private readonly locals: number[] = [];
  private depth = 0;

  /** @param params - the function's parameter types (they are its first locals) */
  constructor(readonly params: readonly number[]) {}

  /** A new local of type `type`; returns its index. */
  local(type = I32): number {
    this.locals.push(type);
    return this.params.length + this.locals.length - 1;
  }

  /** Appends code (nested fragments are flattened). */
  emit(code: Code): void {
    this.code.code(code);
  }

  /** Opens a block (`loop`, `if`) with an optional i32 result; returns its label. */
  open(kind: "block" | "loop" | "if", result = false): Label {
    this.code.byte(kind === "block" ? OP.block : kind === "loop" ? OP.loop : OP.if);
    this.code.byte(result ? I32 : 0x40);
    this.depth++;
    return { level: this.depth };
  }

  /** `else` of the innermost `if`. */
  else(): void {
    this.code.byte(OP.else);
  }

  /** Closes the innermost block. */
  end(): void {
    if (this.depth === 0) throw new Error("wasm writer: end without a block");
    this.code.byte(OP.end);
    this.depth--;
  }

  private rel(l: Label): number {
    const d = this.depth - l.level;
    if (d < 0) throw new Error("wasm writer: branch to a closed block");
    return d;
  }

  /** `br` to `l`. */
  br(l: Label): void {
    this.code.byte(OP.br);
    this.code.uleb(this.rel(l));
  }

  /** `br_if` to `l` (pops the condition). */
  brIf(l: Label): void {
    this.code.byte(OP.brIf);
    this.code.uleb(this.rel(l));
  }

  /** `br_table` over `targets`, `dflt` otherwise (pops the index). */
  brTable(targets: readonly Label[], dflt: Label): void {
    this.code.byte(OP.brTable);
    this.code.uleb(targets.length);
    for (const t of targets) this.code.uleb(this.rel(t));
    this.code.uleb(this.rel(dflt));
  }

  /** The body in the code section's format: its size, locals grouped by type, code, `end`. */
  body(): Uint8Array {
    if (this.depth !== 0) throw new Error("wasm writer: unclosed block");
    const b = new ByteWriter();
    let groups = 0;
    for (let i = 0; i < this.locals.length; i++) if (i === 0 || this.locals[i] !== this.locals[i - 1]) groups++;
    b.uleb(groups);
    for (let i = 0; i < this.locals.length; ) {
      let j = i;
      while (j < this.locals.length && this.locals[j] === this.locals[i]) j++;
      b.uleb(j - i);
      b.byte(this.locals[i]);
      i = j;
    }
    b.bytes(this.code.result());
    b.byte(OP.end);
    const out = new ByteWriter();
    out.sized(b.result());
    return out.result();
  }
}

/** Writes a module: function types, imports (functions, then tables and memories), functions and exports. */
export class ModuleWriter {
  private readonly types: string[] = [];
  private readonly typeBytes: number[][] = [];
  private readonly imports: ByteWriter[] = [];
  private importedFuncs = 0;
  private readonly funcTypes: number[] = [];
  private readonly bodies: Uint8Array[] = [];
  private readonly exports: ByteWriter[] = [];

  /** The index of the function type (`params`) -> (`results`), added once. */
  type(params: readonly number[], results: readonly number[]): number {
    const key = `${params.join(",")}>${results.join(",")}`;
    let i = this.types.indexOf(key);
    if (i < 0) {
      i = this.types.length;
      this.types.push(key);
      this.typeBytes.push([0x60, ...uleb(params.length), ...params, ...uleb(results.length), ...results]);
    }
    return i;
  }

  /** Imports function `module.field` of type `type`; returns its function index. Imports come before any function. */
  importFunction(module: string, field: string, type: number): number {
    if (this.bodies.length > 0) throw new Error("wasm writer: imports come before functions");
    const w = new ByteWriter();
    name(w, module);
    name(w, field);
    w.byte(0x00);
    w.uleb(type);
    this.imports.push(w);
    return this.importedFuncs++;
  }

  /** Imports a function table `module.field` with at least `min` entries. */
  importTable(module: string, field: string, min: number): void {
    const w = new ByteWriter();
    name(w, module);
    name(w, field);
    w.bytes([0x01, 0x70, 0x00]);
    w.uleb(min);
    this.imports.push(w);
  }

  /** Imports memory `module.field` with at least `minPages` 64 KiB pages. */
  importMemory(module: string, field: string, minPages: number): void {
    const w = new ByteWriter();
    name(w, module);
    name(w, field);
    w.bytes([0x02, 0x00]);
    w.uleb(minPages);
    this.imports.push(w);
  }

  /** The function index the next {@link ModuleWriter.addFunction} gets. */
  get nextFunction(): number {
    return this.importedFuncs + this.bodies.length;
  }

  /** Adds a function of type `type` with body `f` (a writer, or a body one wrote before); returns its index. */
  addFunction(type: number, f: FunctionWriter | Uint8Array): number {
    this.funcTypes.push(type);
    this.bodies.push(f instanceof FunctionWriter ? f.body() : f);
    return this.importedFuncs + this.bodies.length - 1;
  }

  /** Exports function `index` as `field`. */
  exportFunction(field: string, index: number): void {
    const w = new ByteWriter();
    name(w, field);
    w.byte(0x00);
    w.uleb(index);
    this.exports.push(w);
  }

  /** The module's binary. */
  bytes(): Uint8Array {
    const out = new ByteWriter();
    out.bytes([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    const section = (id: number, count: number, items: (Uint8Array | readonly number[])[]): void => {
      const s = new ByteWriter();
      s.uleb(count);
      for (const it of items) s.bytes(it);
      out.byte(id);
      out.sized(s.result());
    };
    section(1, this.typeBytes.length, this.typeBytes);
    section(
      2,
      this.imports.length,
      this.imports.map((w) => w.result()),
    );
    section(
      3,
      this.funcTypes.length,
      this.funcTypes.map((t) => uleb(t)),
    );
    section(
      7,
      this.exports.length,
      this.exports.map((w) => w.result()),
    );
    section(10, this.bodies.length, this.bodies);
    return out.result();
  }
}
