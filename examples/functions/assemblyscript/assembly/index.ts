// A Freshet function in AssemblyScript: every event becomes one output to the default output
// topic with the same key and headers and its value's bytes reversed.
// ABI: docs/functions-wasm-abi.md. Built with `--runtime stub`, whose allocator never frees: the
// host replaces the instance when its memory grows past a threshold.

// The host writes the batch here.
export function freshet_alloc(size: i32): i32 {
  return <i32>heap.alloc(<usize>size);
}

// Skips an optional field: i32 length (-1 = null), then the bytes.
function skipOpt(p: usize): usize {
  const n = load<i32>(p);
  return n < 0 ? p + 4 : p + 4 + <usize>n;
}

export function freshet_handle(ptr: i32, len: i32): i64 {
  let p = <usize>ptr;
  p += 4 + <usize>load<u32>(p); // the topic
  const count = load<u32>(p);
  p += 4;
  // Each output is 16 bytes smaller than its event: the reply fits in the input's size.
  const reply = heap.alloc(<usize>len + 16);
  store<u32>(reply, 0); // status: ok
  store<u32>(reply, count, 4); // one output per event
  let out = reply + 8;
  for (let i: u32 = 0; i < count; i++) {
    const start = p + 20; // after partition, offset, timestamp
    const valueAt = skipOpt(start); // after the key
    let end = skipOpt(valueAt);
    const headers = load<u32>(end);
    end += 4;
    for (let h: u32 = 0; h < headers; h++) {
      end += 4 + <usize>load<u32>(end); // the name
      end = skipOpt(end); // the value
    }
    // key, value and headers are laid out as in an output: copy them after topic -1.
    store<i32>(out, -1);
    memory.copy(out + 4, start, end - start);
    const n = load<i32>(valueAt);
    if (n > 1) {
      let a = out + 4 + (valueAt - start) + 4;
      let b = a + <usize>n - 1;
      while (a < b) {
        const t = load<u8>(a);
        store<u8>(a, load<u8>(b));
        store<u8>(b, t);
        a++;
        b--;
      }
    }
    out += 4 + (end - start);
    p = end;
  }
  store<u32>(out, 0); // no failures
  out += 4;
  return (<i64>reply << 32) | <i64>(out - reply);
}
