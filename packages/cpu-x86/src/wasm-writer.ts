// A minimal WebAssembly binary writer (WebAssembly Core Specification 1.0,
// chapter 5, "Binary Format"): the sections a compiled region needs (types,
// imported functions and memory, functions, exports, code) and a function
// body writer whose structured control flow tracks its nesting, so branches
// name their target block rather than a depth counted by hand.

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
  i64Mul: 0x7e,
  i64ExtendI32S: 0xac,
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

/** Appends `src` to `dst` (spreading a large array into push overflows the stack). */
export function append(dst: number[], src: readonly number[]): void {
  for (let i = 0; i < src.length; i++) dst.push(src[i]);
}

function name(s: string): number[] {
  const b = Array.from(new TextEncoder().encode(s));
  return [...uleb(b.length), ...b];
}

function section(id: number, body: number[]): number[] {
  const out = [id, ...uleb(body.length)];
  append(out, body);
  return out;
}

function vec(items: number[][]): number[] {
  const out = uleb(items.length);
  for (const it of items) append(out, it);
  return out;
}

/** A structured-control label: the nesting level of its block. */
export interface Label {
  readonly level: number;
}

/** Writes one function body: locals, then code, with the nesting of blocks tracked. */
export class FunctionWriter {
  readonly code: number[] = [];
  private readonly locals: number[] = [];
  private depth = 0;

  /** @param params - the function's parameter types (they are its first locals) */
  constructor(readonly params: readonly number[]) {}

  /** A new local of type `type`; returns its index. */
  local(type = I32): number {
    this.locals.push(type);
    return this.params.length + this.locals.length - 1;
  }

  /** Appends raw code bytes. */
  emit(bytes: readonly number[]): void {
    append(this.code, bytes);
  }

  /** Opens a block (`loop` when `isLoop`) with an optional i32 result; returns its label. */
  open(kind: "block" | "loop" | "if", result = false): Label {
    this.code.push(kind === "block" ? OP.block : kind === "loop" ? OP.loop : OP.if, result ? I32 : 0x40);
    this.depth++;
    return { level: this.depth };
  }

  /** `else` of the innermost `if`. */
  else(): void {
    this.code.push(OP.else);
  }

  /** Closes the innermost block. */
  end(): void {
    if (this.depth === 0) throw new Error("wasm writer: end without a block");
    this.code.push(OP.end);
    this.depth--;
  }

  private rel(l: Label): number {
    const d = this.depth - l.level;
    if (d < 0) throw new Error("wasm writer: branch to a closed block");
    return d;
  }

  /** `br` to `l`. */
  br(l: Label): void {
    this.code.push(OP.br, ...uleb(this.rel(l)));
  }

  /** `br_if` to `l` (pops the condition). */
  brIf(l: Label): void {
    this.code.push(OP.brIf, ...uleb(this.rel(l)));
  }

  /** `br_table` over `targets`, `dflt` otherwise (pops the index). */
  brTable(targets: readonly Label[], dflt: Label): void {
    this.code.push(OP.brTable, ...uleb(targets.length));
    for (const t of targets) this.code.push(...uleb(this.rel(t)));
    this.code.push(...uleb(this.rel(dflt)));
  }

  /** The body in the code section's format: locals grouped by type, code, `end`. */
  body(): number[] {
    if (this.depth !== 0) throw new Error("wasm writer: unclosed block");
    const groups: number[][] = [];
    for (let i = 0; i < this.locals.length; ) {
      let j = i;
      while (j < this.locals.length && this.locals[j] === this.locals[i]) j++;
      groups.push([...uleb(j - i), this.locals[i]]);
      i = j;
    }
    const b = vec(groups);
    append(b, this.code);
    b.push(OP.end);
    const out = uleb(b.length);
    append(out, b);
    return out;
  }
}

/** Writes a module: function types, imports (functions, then one memory), functions and exports. */
export class ModuleWriter {
  private readonly types: string[] = [];
  private readonly typeBytes: number[][] = [];
  private readonly imports: number[][] = [];
  private importedFuncs = 0;
  private readonly funcTypes: number[] = [];
  private readonly bodies: number[][] = [];
  private readonly exports: number[][] = [];

  /** The index of the function type (`params`) -> (`results`), added once. */
  type(params: readonly number[], results: readonly number[]): number {
    const key = `${params.join(",")}>${results.join(",")}`;
    let i = this.types.indexOf(key);
    if (i < 0) {
      i = this.types.length;
      this.types.push(key);
      this.typeBytes.push([0x60, ...vec(params.map((p) => [p])), ...vec(results.map((r) => [r]))]);
    }
    return i;
  }

  /** Imports function `module.field` of type `type`; returns its function index. Imports come before any function. */
  importFunction(module: string, field: string, type: number): number {
    if (this.bodies.length > 0) throw new Error("wasm writer: imports come before functions");
    this.imports.push([...name(module), ...name(field), 0x00, ...uleb(type)]);
    return this.importedFuncs++;
  }

  /** Imports memory `module.field` with at least `minPages` 64 KiB pages. */
  importMemory(module: string, field: string, minPages: number): void {
    this.imports.push([...name(module), ...name(field), 0x02, 0x00, ...uleb(minPages)]);
  }

  /** The function index the next {@link ModuleWriter.addFunction} gets. */
  get nextFunction(): number {
    return this.importedFuncs + this.bodies.length;
  }

  /** Adds a function of type `type` with body `f`; returns its index. */
  addFunction(type: number, f: FunctionWriter): number {
    this.funcTypes.push(type);
    this.bodies.push(f.body());
    return this.importedFuncs + this.bodies.length - 1;
  }

  /** Exports function `index` as `field`. */
  exportFunction(field: string, index: number): void {
    this.exports.push([...name(field), 0x00, ...uleb(index)]);
  }

  /** The module's binary. */
  bytes(): Uint8Array {
    const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    append(out, section(1, vec(this.typeBytes)));
    append(out, section(2, vec(this.imports)));
    append(out, section(3, vec(this.funcTypes.map((t) => uleb(t)))));
    append(out, section(7, vec(this.exports)));
    append(out, section(10, vec(this.bodies)));
    return Uint8Array.from(out);
  }
}
