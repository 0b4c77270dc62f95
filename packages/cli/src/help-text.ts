import { PROGRAM } from './context.js';

export function versionText(version: string): string {
  return `${PROGRAM} version ${version} (qemu-img 7.2 compatible)\nA pure-TypeScript implementation of QEMU's qcow2 format: https://github.com/qcow2-toolkit/qcow2\n`;
}

/** qemu-img's help, for the commands this tool has. */
export function helpText(version: string): string {
  return `${versionText(version)}usage: ${PROGRAM} [standard options] command [command options]
QEMU disk image utility (qemu-img 7.2 syntax)

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
  compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
  convert [-U] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-o options] [-l snapshot_param] [-S sparse_size] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  io [-f fmt] [-r] [-U] [-t cache] [-d discard] [-c command]... filename
  map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
  snapshot [-f fmt] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename

Command parameters:
  'filename' is a disk image filename
  'fmt' is the disk image format (qcow2 or raw). It is guessed automatically when absent
  'cache' is the cache mode for writes: 'unsafe' never flushes, 'writethrough' flushes after
    every write, 'writeback' (and 'none', 'directsync') flush when asked; 'src_cache' is accepted
    for compatibility
  'options' is a comma-separated list of format-specific options in a name=value format
    (see '-o help'); 'backing_file' and 'backing_fmt' name the backing file and its format
  'size', 'offset', 'len' and 'sparse_size' take the suffixes 'k' or 'K' (kilobyte, 1024),
    'M' (megabyte, 1024k), 'G' (gigabyte, 1024M), 'T' (terabyte, 1024G), 'P' (petabyte, 1024T)
    and 'E' (exabyte, 1024P); 'b' is ignored
  'output_filename' is the destination disk image filename
  'output_fmt' is the destination format: raw or qcow2
  '-c' indicates that the target image must be compressed (qcow2 only)
  '-u' creates the image without opening the backing file (its size must be given)
  'snapshot_param' is param used for internal snapshot, format
    is 'snapshot.id=[ID],snapshot.name=[NAME]', or '[ID_OR_NAME]'
  '-p' show progress of command (only certain commands)
  '-q' use Quiet mode - do not print any output (except errors)
  '-S' indicates the consecutive number of bytes (defaults to 4k) that must
       contain only zeros for ${PROGRAM} to create a sparse image during
       conversion. If the number of bytes is 0, the source will not be scanned for
       unallocated or zero sectors, and the destination image will always be
       fully allocated
  '--output' takes the format in which the output must be done (human or json)
  '-n' skips the target volume creation (useful if the volume is created
       prior to running ${PROGRAM})

Parameters to check subcommand:
  '-r' tries to repair any inconsistencies that are found during the check.
       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all
       kinds of errors, with a higher risk of choosing the wrong fix or
       hiding corruption that has already occurred.

Parameters to snapshot subcommand:
  'snapshot' is the name of the snapshot to create, apply or delete
  '-a' applies a snapshot (revert disk to saved state)
  '-c' creates a snapshot
  '-d' deletes a snapshot
  '-l' lists all snapshots in the given image

Parameters to compare subcommand:
  '-f' first image format
  '-F' second image format
  '-s' run in Strict mode - fail on different image size or sector allocation

Parameters to io subcommand:
  '-c' runs a qemu-io command: read [-bCqv] [-P pattern [-s off] [-l len]] off len,
       readv [-Cqv] [-P pattern] off len [len..], write [-cCfqzu] [-P pattern | -s file] off len,
       writev [-Cfq] [-P pattern] off len [len..], discard [-Cq] off len, flush, length, map,
       alloc off [count], help [command], quit
  '-r' opens the image read-only (else it is opened for writing)

Parameters to bench subcommand:
  '-w' runs write requests (of the '--pattern' byte, default 0) instead of reads
  '--flush-interval' flushes after every that many requests, the queue drained first
       unless '--no-drain'

Supported formats: qcow2 raw
`;
}
