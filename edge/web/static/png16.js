"use strict";
// A 16-bit greyscale PNG (the depth in millimetres, as `process` writes it) -> {width, height, data: Uint16Array}.
// A canvas reads 8 bits a sample, so the file is decoded here: its chunks, zlib through the browser's own
// DecompressionStream, and PNG's five row filters. Non-interlaced only (OpenCV never interlaces).

async function decodePng16(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;  // after the signature
  let width = 0, height = 0;
  const compressed = [];
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const bits = bytes[at + 16], colour = bytes[at + 17], interlace = bytes[at + 20];
      if (bits !== 16 || colour !== 0 || interlace !== 0) {
        throw new Error(`depth PNG: ${bits}-bit, colour type ${colour}, interlace ${interlace}; 16-bit grey expected`);
      }
    } else if (type === "IDAT") {
      compressed.push(bytes.subarray(at + 8, at + 8 + length));
    } else if (type === "IEND") {
      break;
    }
    at += 12 + length;  // length, type, data, CRC
  }
  const inflated = new Blob(compressed).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(inflated).arrayBuffer());
  const stride = width * 2, bpp = 2;
  if (raw.length < height * (stride + 1)) throw new Error("depth PNG: truncated");
  const data = new Uint16Array(width * height);
  let previous = new Uint8Array(stride), row = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const start = y * (stride + 1) + 1, filter = raw[start - 1];
    for (let i = 0; i < stride; i++) {
      const value = raw[start + i], left = i >= bpp ? row[i - bpp] : 0, up = previous[i];
      if (filter === 0) row[i] = value;
      else if (filter === 1) row[i] = value + left;
      else if (filter === 2) row[i] = value + up;
      else if (filter === 3) row[i] = value + ((left + up) >> 1);
      else if (filter === 4) {
        const upLeft = i >= bpp ? previous[i - bpp] : 0;
        const p = left + up - upLeft, pa = Math.abs(p - left), pb = Math.abs(p - up), pc = Math.abs(p - upLeft);
        row[i] = value + (pa <= pb && pa <= pc ? left : pb <= pc ? up : upLeft);
      } else throw new Error(`depth PNG: unknown row filter ${filter}`);
    }
    for (let x = 0, o = y * width; x < width; x++) data[o + x] = (row[2 * x] << 8) | row[2 * x + 1];  // big-endian
    [previous, row] = [row, previous];
  }
  return {width, height, data};
}
