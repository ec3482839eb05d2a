import { defineConfig } from "vite";

// Tauri loads the built files from dist/; the dev server is for `tauri dev`.
export default defineConfig({
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { target: "safari15", outDir: "dist", emptyOutDir: true },
});
