// Byte stores: where an image's bytes live. The image code above this only
// needs positional reads and writes, so a Node file, a memfs volume, a buffer
// in memory or a browser File all work.
import { Qcow2UsageError } from "./errors.js";

/**
 * Positional byte storage under an image (the image file, an external data
 * file, a backing file). Reads past the end return zeros, as a sparse file
 * does; writes past the end grow it.
 */
export interface ByteStore {
  /** True when writes are refused. */
  readonly readOnly: boolean;
  /** Current length in bytes. */
  readonly size: number;
  /** A name for messages (a path, or `memory`). */
  readonly name: string;
  /** Fills `dest` from `position`; bytes past the end read as zero. */
  read(position: number, dest: Uint8Array): Promise<void>;
  /** Writes `src` at `position`, growing the store if needed. */
  write(position: number, src: Uint8Array): Promise<void>;
  /** Sets the length (cuts or extends with zeros). */
  truncate(size: number): Promise<void>;
  /** Makes completed writes durable (fdatasync for files). */
  flush(): Promise<void>;
  /** Releases the store. */
  close(): Promise<void>;
}

/** Result of {@link FileHandleLike.read}. */
export interface ReadResult {
  /** Bytes read. */
  bytesRead: number;
}

/** Result of {@link FileHandleLike.write}. */
export interface WriteResult {
  /** Bytes written. */
  bytesWritten: number;
}

/** Result of {@link FileHandleLike.stat}. */
export interface StatResult {
  /** File length. */
  size: number | bigint;
}

/** The subset of a Node `fs/promises` FileHandle a {@link FileStore} uses (memfs provides it too). */
export interface FileHandleLike {
  /** Positional read. */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<ReadResult>;
  /** Positional write. */
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<WriteResult>;
  /** File status (only `size` is used). */
  stat(): Promise<StatResult>;
  /** Cut or extend. */
  truncate(len: number): Promise<void>;
  /** fdatasync(2). */
  datasync(): Promise<void>;
  /** Close the descriptor. */
  close(): Promise<void>;
}

/** The subset of `fs` a {@link FileStore} opens files with: Node's `fs` or a memfs volume. */
export interface FsLike {
  /** `fs.promises`. */
  promises: {
    /** Opens a file, resolving to a {@link FileHandleLike}. */
    open(path: string, flags: string, mode?: number): Promise<unknown>;
  };
}

/** The synchronous positional calls {@link FileStore} uses with `syncIo`. */
interface SyncFs {
  readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
  writeSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
}

/** A store over a file opened through Node's `fs` (or any {@link FsLike}, such as memfs). */
export class FileStore implements ByteStore {
  /** @inheritdoc */
  readonly readOnly: boolean;
  /** @inheritdoc */
  readonly name: string;
  private handle: FileHandleLike | null;
  private length: number;
  private readonly sync: SyncFs | null;
  private readonly fd: number;

  private constructor(name: string, handle: FileHandleLike, size: number, readOnly: boolean, sync: SyncFs | null) {
    this.name = name;
    this.handle = handle;
    this.length = size;
    this.readOnly = readOnly;
    this.sync = sync;
    this.fd = (handle as unknown as { fd?: number }).fd ?? -1;
  }

  /**
   * Opens an existing file.
   * @param path - file path
   * @param options - `readOnly`; `fs` to use another file system (memfs);
   *   `create` to create or truncate it; `syncIo` to read and write with
   *   pread/pwrite on the calling thread (much faster when the file is in the
   *   page cache, but each call blocks the event loop while it runs)
   */
  static async open(path: string, options: { readOnly?: boolean; fs?: FsLike; create?: boolean; syncIo?: boolean } = {}): Promise<FileStore> {
    const fsm = options.fs ?? (await import("node:fs"));
    const flags = options.create ? "w+" : options.readOnly ? "r" : "r+";
    const handle = (await fsm.promises.open(path, flags, 0o644)) as FileHandleLike;
    const st = await handle.stat();
    const sync = options.syncIo && typeof (fsm as unknown as SyncFs).readSync === "function" ? (fsm as unknown as SyncFs) : null;
    return new FileStore(path, handle, Number(st.size), !!options.readOnly, sync);
  }

  /** @inheritdoc */
  get size(): number {
    return this.length;
  }

  private h(): FileHandleLike {
    if (!this.handle) throw new Qcow2UsageError("QCOW2_CLOSED", `${this.name} is closed`);
    return this.handle;
  }

  /** @inheritdoc */
  async read(position: number, dest: Uint8Array): Promise<void> {
    const h = this.h();
    let done = 0;
    const want = Math.max(0, Math.min(dest.length, this.length - position));
    if (this.sync && this.fd >= 0) {
      while (done < want) {
        const n = this.sync.readSync(this.fd, dest, done, want - done, position + done);
        if (n <= 0) break;
        done += n;
      }
      if (done < dest.length) dest.fill(0, done);
      return;
    }
    while (done < want) {
      const { bytesRead } = await h.read(dest, done, want - done, position + done);
      if (bytesRead <= 0) break;
      done += bytesRead;
    }
    if (done < dest.length) dest.fill(0, done);
  }

  /** @inheritdoc */
  async write(position: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.name} is open read-only`);
    const h = this.h();
    let done = 0;
    while (done < src.length) {
      const bytesWritten = this.sync && this.fd >= 0 ? this.sync.writeSync(this.fd, src, done, src.length - done, position + done) : (await h.write(src, done, src.length - done, position + done)).bytesWritten;
      if (bytesWritten <= 0) throw new Qcow2UsageError("QCOW2_IO", `short write to ${this.name} at ${position + done}`);
      done += bytesWritten;
    }
    if (position + src.length > this.length) this.length = position + src.length;
  }

  /** @inheritdoc */
  async truncate(size: number): Promise<void> {
    if (this.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.name} is open read-only`);
    await this.h().truncate(size);
    this.length = size;
  }

  /** @inheritdoc */
  async flush(): Promise<void> {
    if (!this.readOnly) await this.h().datasync();
  }

  /** @inheritdoc */
  async close(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    if (h) await h.close();
  }
}

/** A growable store in memory (tests, images built in a browser). */
export class MemoryStore implements ByteStore {
  /** @inheritdoc */
  readonly readOnly: boolean;
  /** @inheritdoc */
  readonly name: string;
  private buf: Uint8Array;
  private length: number;

  /**
   * @param initial - initial contents (copied)
   * @param options - `readOnly`, `name` for messages
   */
  constructor(initial: Uint8Array = new Uint8Array(0), options: { readOnly?: boolean; name?: string } = {}) {
    this.buf = new Uint8Array(Math.max(4096, initial.length));
    this.buf.set(initial);
    this.length = initial.length;
    this.readOnly = !!options.readOnly;
    this.name = options.name ?? "memory";
  }

  /** @inheritdoc */
  get size(): number {
    return this.length;
  }

  /** The current contents (a copy). */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  /** @inheritdoc */
  async read(position: number, dest: Uint8Array): Promise<void> {
    const n = Math.max(0, Math.min(dest.length, this.length - position));
    if (n > 0) dest.set(this.buf.subarray(position, position + n));
    if (n < dest.length) dest.fill(0, n);
  }

  private ensure(size: number): void {
    if (size <= this.buf.length) return;
    let cap = this.buf.length;
    while (cap < size) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  /** @inheritdoc */
  async write(position: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.name} is read-only`);
    const end = position + src.length;
    this.ensure(end);
    if (position > this.length) this.buf.fill(0, this.length, position);
    this.buf.set(src, position);
    if (end > this.length) this.length = end;
  }

  /** @inheritdoc */
  async truncate(size: number): Promise<void> {
    if (this.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.name} is read-only`);
    this.ensure(size);
    if (size > this.length) this.buf.fill(0, this.length, size);
    this.length = size;
  }

  /** @inheritdoc */
  async flush(): Promise<void> {}

  /** @inheritdoc */
  async close(): Promise<void> {}
}

/** Anything that can read a byte range by position: a browser `Blob`/`File` fits. */
export interface PositionalSource {
  /** Length in bytes. */
  readonly size: number;
  /** A slice whose bytes can be fetched (Blob semantics). */
  slice(start: number, end: number): {
    /** The slice's bytes. */
    arrayBuffer(): Promise<ArrayBuffer>;
  };
}

/** A read-only store over a {@link PositionalSource} such as a browser `File`. */
export class SourceStore implements ByteStore {
  /** Always true: a Blob cannot be written. */
  readonly readOnly = true;
  /** @inheritdoc */
  readonly name: string;
  private readonly source: PositionalSource;

  /**
   * @param source - the Blob-like source
   * @param name - a name for messages
   */
  constructor(source: PositionalSource, name = "blob") {
    this.source = source;
    this.name = name;
  }

  /** @inheritdoc */
  get size(): number {
    return this.source.size;
  }

  /** @inheritdoc */
  async read(position: number, dest: Uint8Array): Promise<void> {
    const end = Math.min(this.source.size, position + dest.length);
    let n = 0;
    if (end > position) {
      const ab = await this.source.slice(position, end).arrayBuffer();
      dest.set(new Uint8Array(ab));
      n = ab.byteLength;
    }
    if (n < dest.length) dest.fill(0, n);
  }

  /** Refused: the source is read-only. */
  async write(): Promise<void> {
    throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.name} is read-only`);
  }

  /** Refused: the source is read-only. */
  async truncate(): Promise<void> {
    throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.name} is read-only`);
  }

  /** Nothing to do. */
  async flush(): Promise<void> {}

  /** Nothing to do. */
  async close(): Promise<void> {}
}
