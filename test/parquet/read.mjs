// Reads a Parquet file with Apache Arrow's Rust parquet reader (compiled
// to WebAssembly by parquet-wasm) and prints its Arrow schema and rows as
// JSON, for the Go tests: {"fields": [{name, type, nullable, children}],
// "rows": [{column: value}]}. Values: 64-bit integers and decimals as
// strings, dates as YYYY-MM-DD, timestamps as RFC 3339 (milliseconds),
// binary as base64. Given several files, it prints an array of such
// objects, one per file (one Node start for a whole Delta table).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { initSync, readParquet } from "parquet-wasm/esm";
import { tableFromIPC, DataType } from "apache-arrow";

const require = createRequire(import.meta.url);
initSync({ module: readFileSync(require.resolve("parquet-wasm/esm/parquet_wasm_bg.wasm")) });

function describe(f) {
  const d = { name: f.name, type: String(f.type), nullable: f.nullable };
  if (f.type.children && f.type.children.length) d.children = f.type.children.map(describe);
  return d;
}

function norm(type, v) {
  if (v === null || v === undefined) return null;
  if (DataType.isInt(type)) return type.bitWidth === 64 ? String(v) : v;
  if (DataType.isDecimal(type)) {
    let s = String(v).replace(/^"|"$/g, "");
    const neg = s.startsWith("-");
    if (neg) s = s.slice(1);
    s = s.padStart(type.scale + 1, "0");
    const out = type.scale > 0 ? s.slice(0, s.length - type.scale) + "." + s.slice(s.length - type.scale) : s;
    return (neg ? "-" : "") + out;
  }
  if (DataType.isDate(type)) return new Date(Number(v)).toISOString().slice(0, 10);
  if (DataType.isTimestamp(type)) return new Date(Math.floor(Number(v))).toISOString();
  if (DataType.isBinary(type)) return Buffer.from(v).toString("base64");
  if (DataType.isStruct(type)) {
    const o = {};
    for (const c of type.children) o[c.name] = norm(c.type, v[c.name]);
    return o;
  }
  if (DataType.isList(type)) return Array.from(v, (e) => norm(type.children[0].type, e));
  if (DataType.isMap(type)) {
    const entry = type.children[0].type;
    const o = {};
    for (const [k, e] of v) o[k] = norm(entry.children[1].type, e);
    return o;
  }
  return v;
}

function read(path) {
  const table = tableFromIPC(readParquet(new Uint8Array(readFileSync(path))).intoIPCStream());
  const fields = table.schema.fields;
  const rows = [];
  for (let i = 0; i < table.numRows; i++) {
    const r = {};
    for (const f of fields) r[f.name] = norm(f.type, table.getChild(f.name).get(i));
    rows.push(r);
  }
  return { fields: fields.map(describe), rows };
}

const paths = process.argv.slice(2);
console.log(JSON.stringify(paths.length === 1 ? read(paths[0]) : paths.map(read)));
