import { PROGRAM } from './context.js';

export function versionText(version: string): string {
  return `${PROGRAM} version ${version} (qemu-img 7.2 compatible)\nA pure-TypeScript implementation of QEMU's qcow2 format: https://github.com/qcow2-toolkit/qcow2\n`;
}

/** qemu-img's help, for the commands this tool has. */
export function helpText(version: string): string {
  return `${versionText(version)}usage: ${PROGRAM} [standard options] command [command options]
QEMU disk image utility (read-only commands, qemu-img 7.2 syntax)

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
  bench [-c count] [-d depth] [-f fmt] [-i aio] [-n] [-o offset] [-q] [-s buffer_size] [-S step_size] [-t cache] [-U] filename
  compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
  convert [-U] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-l snapshot_param] [-S sparse_size] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename
  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  io [-f fmt] [-r] [-U] [-t cache] [-c command]... filename
  map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename

Command parameters:
  'filename' is a disk image filename
  'fmt' is the disk image format (qcow2 or raw). It is guessed automatically when absent
  'cache' and 'src_cache' are accepted for compatibility (none, writeback, writethrough,
    directsync, unsafe); the engine has its own cache
  'size', 'offset', 'len' and 'sparse_size' take the suffixes 'k' or 'K' (kilobyte, 1024),
    'M' (megabyte, 1024k), 'G' (gigabyte, 1024M), 'T' (terabyte, 1024G), 'P' (petabyte, 1024T)
    and 'E' (exabyte, 1024P); 'b' is ignored
  'output_filename' is the destination disk image filename
  'output_fmt' is the destination format: raw
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

Parameters to compare subcommand:
  '-f' first image format
  '-F' second image format
  '-s' run in Strict mode - fail on different image size or sector allocation

Parameters to io subcommand:
  '-c' runs a qemu-io command: read [-bCqv] [-P pattern [-s off] [-l len]] off len,
       readv [-Cqv] [-P pattern] off len [len..], length, map, alloc off [count],
       help [command], quit

Supported formats: qcow2 raw
`;
}
