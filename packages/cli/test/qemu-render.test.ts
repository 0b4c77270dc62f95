/**
 * The renderers against qemu's own text, without the engine: qemu-img info/map describe images
 * qemu made, their JSON is turned back into what the engine reports, and our human and JSON
 * output must then equal qemu's character for character.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import type { ImageExtent, ImageLike, ImageSnapshot } from '../src/host.js';
import { collectImageInfo, humanImageInfo, imageInfoQDict } from '../src/image-info.js';
import { chainLayers, MAP_HUMAN_HEADER, mapEntriesFromExtents, renderMap } from '../src/map-entries.js';
import { toJsonPretty } from '../src/qobject.js';
import { FakeImage } from './helpers.js';

type Json = Record<string, unknown>;

function sh(dir: string, cmd: string, args: string[], allowFail = false): { stdout: string; stderr: string; status: number } {
  const r = spawnSync(cmd, args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? -1 };
}

/** An ImageLike with what `qemu-img info --output=json` says about a file. */
function imageFromInfo(info: Json, backing?: ImageLike): ImageLike {
  const snapshots: ImageSnapshot[] = ((info['snapshots'] as Json[] | undefined) ?? []).map((s) => ({
    id: s['id'] as string,
    name: s['name'] as string,
    vmStateSize: s['vm-state-size'] as number,
    dateSec: s['date-sec'] as number,
    dateNsec: s['date-nsec'] as number,
    vmClockNsec: (s['vm-clock-sec'] as number) * 1e9 + (s['vm-clock-nsec'] as number),
    diskSize: 0,
    ...(s['icount'] === undefined ? {} : { icount: s['icount'] as number }),
  }));
  const specific = info['format-specific'] as { data: Json } | undefined;
  return new FakeImage(info['virtual-size'] as number, {
    format: info['format'] as 'qcow2' | 'raw',
    ...(info['cluster-size'] === undefined ? {} : { clusterSize: info['cluster-size'] as number }),
    ...(info['backing-filename'] === undefined ? {} : { backingFile: info['backing-filename'] as string }),
    ...(info['backing-filename-format'] === undefined ? {} : { backingFormat: info['backing-filename-format'] as string }),
    ...(specific === undefined ? {} : { formatSpecific: specific.data }),
    ...(backing === undefined ? {} : { backing }),
    dirty: info['dirty-flag'] as boolean,
    snapshots,
  });
}

describeWithQemu('info and map text equal qemu-img 7.2 (renderers over qemu-reported facts)', () => {
  const tmp = makeTempDir('qcow2-cli-render-');
  const dir = tmp.dir;
  const img = (...args: string[]): string => sh(dir, 'qemu-img', args).stdout;
  const io = (...args: string[]): string => sh(dir, 'qemu-io', args).stdout;

  beforeAll(() => {
    img('create', '-q', '-f', 'qcow2', 'snap.qcow2', '1G');
    io('-c', 'write -P 0xab 0 64k', '-c', 'write -z 1M 128k', '-c', 'write -P 1 2M 1536k', 'snap.qcow2');
    img('snapshot', '-c', 'snap1', 'snap.qcow2');
    img('snapshot', '-c', 'a-rather-long-snapshot-name', 'snap.qcow2');
    mkdirSync(join(dir, 'sub'));
    img('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'sub/base.qcow2', '64M');
    io('-c', 'write -P 0x11 0 128k', 'sub/base.qcow2');
    img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'sub/mid.qcow2', '64M');
    io('-c', 'write -P 0x22 64k 64k', '-c', 'write -z 1M 64k', 'sub/mid.qcow2');
    img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'sub/top.qcow2', '96M');
    io('-c', 'write -P 0x33 3M 64k', 'sub/top.qcow2');
    img('create', '-q', '-f', 'qcow2', '-o', 'data_file=df.raw,data_file_raw=on,extended_l2=on,cluster_size=128k,compression_type=zstd,lazy_refcounts=on,refcount_bits=8', 'df.qcow2', '10M');
    io('-c', 'write -P 5 256k 256k', 'df.qcow2');
    img('bitmap', '--add', 'df.qcow2', 'bm1');
    img('bitmap', '--add', '-g', '128k', '--disable', 'df.qcow2', 'bm0');
    img('create', '-q', '-f', 'qcow2', 'z.qcow2', '4M');
    io('-c', 'write -P 1 0 256k', '-c', 'write -z 0 64k', '-c', 'write -z -u 64k 64k', '-c', 'write -c -P 2 1M 64k', 'z.qcow2');
    img('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'dirty.qcow2', '1M');
    sh(dir, 'qemu-io', ['-c', 'write 0 64k', '-c', 'abort', 'dirty.qcow2'], true);
    writeFileSync(join(dir, 'odd.raw'), new Uint8Array(1000).fill(7));
  });
  afterAll(() => tmp.cleanup());

  const infoCases: [string, string[]][] = [
    ['snapshots', ['snap.qcow2']],
    ['relative chain', ['--backing-chain', 'sub/top.qcow2']],
    ['top alone', ['sub/top.qcow2']],
    ['data file, bitmaps, zstd, extended L2', ['df.qcow2']],
    ['dirty', ['-U', 'dirty.qcow2']],
    ['raw, 1000 bytes', ['odd.raw']],
  ];

  it.each(infoCases)('info: %s', (_name, args) => {
    const human = img('info', ...args);
    const jsonText = img('info', '--output=json', ...args);
    const parsed = JSON.parse(jsonText) as Json | Json[];
    const list = Array.isArray(parsed) ? parsed : [parsed];
    const infos = list.map((entry) =>
      collectImageInfo(imageFromInfo(entry), entry['filename'] as string, entry['actual-size'] as number),
    );
    expect(infos.map(humanImageInfo).join('\n')).toBe(human);
    const value = Array.isArray(parsed) ? infos.map(imageInfoQDict) : imageInfoQDict(infos[0]!);
    expect(`${toJsonPretty(value)}\n`).toBe(jsonText);
  });

  it('info with an absolute path shows the actual path of the backing file', () => {
    const top = join(dir, 'sub/top.qcow2');
    const human = img('info', top);
    const entry = JSON.parse(img('info', '--output=json', top)) as Json;
    expect(human).toContain(`(actual path: ${join(dir, 'sub/mid.qcow2')})`);
    expect(humanImageInfo(collectImageInfo(imageFromInfo(entry), top, entry['actual-size'] as number))).toBe(human);
  });

  /** The engine's extents as qemu's JSON map reports them. */
  function extentsFromMap(mapJson: string): ImageExtent[] {
    return (JSON.parse(mapJson) as Json[]).map((e) => {
      const extent: ImageExtent = {
        offset: e['start'] as number,
        length: e['length'] as number,
        depth: e['depth'] as number,
        kind: e['present'] !== true ? 'unallocated' : e['data'] === true ? 'data' : 'zero',
      };
      if (e['offset'] !== undefined) extent.hostOffset = e['offset'] as number;
      else if (e['data'] === true) extent.compressed = true;
      return extent;
    });
  }

  function chainFromInfo(file: string): ImageLike {
    const list = JSON.parse(img('info', '--backing-chain', '--output=json', file)) as Json[];
    let image: ImageLike | undefined;
    for (const entry of list.reverse()) image = imageFromInfo(entry, image);
    return image as ImageLike;
  }

  const mapCases: [string, string, string[]][] = [
    ['zero, zero-alloc, compressed', 'z.qcow2', []],
    ['chain with a shorter backing file', 'sub/top.qcow2', []],
    ['data file', 'df.qcow2', []],
    ['window', 'sub/top.qcow2', ['--start-offset=100000', '--max-length=3M']],
    ['start past the end', 'z.qcow2', ['--start-offset=5M']],
    ['zero length', 'z.qcow2', ['--max-length=0']],
  ];

  it.each(mapCases)('map: %s', (_name, file, extra) => {
    const jsonText = img('map', '--output=json', ...extra, file);
    const human = sh(dir, 'qemu-img', ['map', ...extra, file], true);
    const image = chainFromInfo(file);
    const entries = mapEntriesFromExtents(extentsFromMap(jsonText), chainLayers(image, file));
    const start = (JSON.parse(jsonText) as Json[])[0]!['start'] as number;

    let ours = '[';
    renderMap(entries, start, true, (t) => (ours += t));
    expect(`${ours}]\n`).toBe(jsonText);

    let text = MAP_HUMAN_HEADER;
    const complete = renderMap(entries, start, false, (t) => (text += t));
    expect(text).toBe(human.stdout);
    expect(complete).toBe(human.status === 0);
    if (!complete) expect(human.stderr).toBe('qemu-img: File contains external, encrypted or compressed clusters.\n');
  });
});
