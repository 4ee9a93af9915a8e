/**
 * outrun's own settings: `~/.outrun/config` (or `--config FILE`), INI:
 *
 *   [cache]
 *   path = ~/.cache/outrun/cache   ; on the remote, ~ being the remote user's home
 *   max_entries = 4096             ; cached files (contents) kept at most
 *   max_size = 20G                 ; bytes of cached contents kept at most
 *   prefixes = /usr,/lib,/lib32,/lib64,/libx32,/bin,/sbin,/etc,/opt
 *   exe_prefix = yes               ; the command's own tree outside them too (~/.pyenv, ~/.cargo)
 *   complete = no                  ; a ControlMaster completes partly held files when idle
 *   compression = zstd             ; or lz4: how chunks travel (LZ4 if the runtime lacks zstd)
 *
 * A missing file means the defaults; a bad value is an error naming the key.
 */
import ini from "ini";
import { outrunHome } from "./home.ts";
export { outrunHome };
import { type ChunkCodec, DEFAULT_PREFIXES } from "./fs/cache/protocol.ts";
import { DEFAULT_LIMITS } from "./fs/cache/store.ts";
import { hex } from "./sys/bytes.ts";

export interface OutrunConfig {
  cache: {
    path: string;
    maxEntries: number;
    maxBytes: number;
    prefixes: string[];
    /** Whether the command's install tree, outside the prefixes, is cached too (exePrefix). */
    exePrefix: boolean;
    /**
     * Whether a ControlMaster completes, while idle, the files the remote holds in part
     * (large files travel in the chunks that are read).
     */
    complete: boolean;
    /** How chunks are compressed on the way (LZ4 where the runtime has no zstd). */
    compression: ChunkCodec;
  };
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** "20G", "512M", "1.5T", "4096" (bytes). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!m) throw new ConfigError(`bad size '${text}'`);
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase()]!;
  return Math.round(Number(m[1]) * unit);
}

export function parseConfig(text: string, source = "config"): OutrunConfig {
  const data = ini.parse(text) as Record<string, Record<string, string> | string>;
  const cache = (typeof data.cache === "object" ? data.cache : {}) as Record<string, string>;
  const bad = (key: string, why: string) => new ConfigError(`${source}: [cache] ${key}: ${why}`);
  const config: OutrunConfig = {
    cache: {
      path: "~/.cache/outrun/cache",
      maxEntries: DEFAULT_LIMITS.maxEntries,
      maxBytes: DEFAULT_LIMITS.maxBytes,
      prefixes: [...DEFAULT_PREFIXES],
      exePrefix: true,
      complete: false,
      compression: "zstd",
    },
  };
  for (const [key, value] of Object.entries(cache)) {
    const v = String(value).trim();
    switch (key) {
      case "path":
        if (!v) throw bad(key, "empty");
        config.cache.path = v;
        break;
      case "max_entries":
        if (!/^\d+$/.test(v) || Number(v) < 1) {
          throw bad(key, `not a positive whole number: '${v}'`);
        }
        config.cache.maxEntries = Number(v);
        break;
      case "max_size":
        try {
          config.cache.maxBytes = parseSize(v);
        } catch (e) {
          throw bad(key, (e as Error).message);
        }
        break;
      case "prefixes": {
        const list = v.split(",").map((p) => p.trim().replace(/\/+$/, "")).filter(Boolean);
        const wrong = list.find((p) => !p.startsWith("/") || p.split("/").includes(".."));
        if (wrong !== undefined) throw bad(key, `not an absolute path: '${wrong}'`);
        config.cache.prefixes = list;
        break;
      }
      case "complete":
      case "exe_prefix": {
        if (!/^(yes|no|true|false)$/i.test(v)) throw bad(key, `not yes or no: '${v}'`);
        const yes = /^(yes|true)$/i.test(v);
        if (key === "complete") config.cache.complete = yes;
        else config.cache.exePrefix = yes;
        break;
      }
      case "compression":
        if (v !== "zstd" && v !== "lz4") throw bad(key, `not zstd or lz4: '${v}'`);
        config.cache.compression = v;
        break;
      default:
        throw bad(key, "unknown key");
    }
  }
  return config;
}

export function readConfig(file?: string): OutrunConfig {
  const path = file ?? `${outrunHome()}/config`;
  let text = "";
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (file !== undefined || !(e instanceof Deno.errors.NotFound)) {
      throw new ConfigError(`${path}: ${(e as Error).message}`);
    }
  }
  return parseConfig(text, path);
}

/** This machine-and-user's id in remote caches (made once, kept in ~/.outrun/client-id). */
export function clientId(): string {
  const path = `${outrunHome()}/client-id`;
  try {
    const id = Deno.readTextFileSync(path).trim();
    if (/^[0-9a-f]{32}$/.test(id)) return id;
  } catch { /* first use */ }
  const id = hex(crypto.getRandomValues(new Uint8Array(16)));
  try {
    Deno.mkdirSync(outrunHome(), { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(`${path}.${Deno.pid}`, `${id}\n`);
    Deno.renameSync(`${path}.${Deno.pid}`, path);
    return Deno.readTextFileSync(path).trim();
  } catch {
    return id; // no writable home: a cache of this session only
  }
}
