// Video-wall geometry: how many columns make the tiles as large as possible in a W x H area.

/**
 * Choose columns/rows for `n` tiles of `aspect` (width/height) in a `width` x `height` box with
 * `gap` pixels between tiles. Returns { cols, rows, tileWidth, tileHeight }.
 */
export function bestGrid(n, width, height, aspect = 16 / 9, gap = 6) {
  if (n <= 0 || width <= 0 || height <= 0) return { cols: 1, rows: 1, tileWidth: 0, tileHeight: 0 };
  let best = { cols: 1, rows: n, tileWidth: 0, tileHeight: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const cellW = (width - gap * (cols - 1)) / cols;
    const cellH = (height - gap * (rows - 1)) / rows;
    const tileWidth = Math.min(cellW, cellH * aspect);
    if (tileWidth > best.tileWidth) best = { cols, rows, tileWidth, tileHeight: tileWidth / aspect };
  }
  return best;
}
