/**
 * `@typevisor/qcow2`: read, write, create, check and repair qcow2 images
 * (versions 2 and 3), and a {@link BlockDevice} interface shared with raw
 * images.
 *
 * @packageDocumentation
 */
export type { BlockDevice } from "./block-device.js";
export { Qcow2Error, Qcow2FormatError, Qcow2UnsupportedError, Qcow2UsageError } from "./errors.js";
export { FileStore, MemoryStore, SourceStore, type ByteStore, type FileHandleLike, type FsLike, type PositionalSource, type ReadResult, type WriteResult, type StatResult } from "./store.js";
export { RawImage } from "./raw-image.js";
export { Qcow2Image, ClusterType, type Qcow2OpenOptions, type MapExtent, type ClusterCipher } from "./qcow2-image.js";
export { createQcow2, type Qcow2CreateOptions, type HeaderAreaWrite } from "./create.js";
export { parseHeader, serializeHeader, type Qcow2Header, type FeatureName, type RawExtension } from "./header.js";
export { openImage, detectFormat, resolveRelative, type OpenImageOptions } from "./open.js";
export { checkImage, checkExitCode, CHECK_MAX_CLUSTERS, type CheckResult, type CheckOptions } from "./check.js";
export { listSnapshots, createSnapshot, applySnapshot, deleteSnapshot, writeVmState, readVmState, vmStateOffset, type SnapshotInfo, type CreateSnapshotOptions } from "./snapshots.js";
export { resizeQcow2, emptyImage, setBackingFile, amendQcow2, type AmendOptions } from "./maintenance.js";
export { isZero as isZeroBuffer } from "./bytes.js";
export { openLuks, luksCreateHook, type LuksCreateOptions } from "./luks.js";
