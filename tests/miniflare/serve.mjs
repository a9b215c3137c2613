// Starts miniflare with one KV namespace and its Local Explorer REST API on a
// loopback port, prints {"base":…,"namespaceId":…} as the first stdout line,
// and serves until SIGTERM/SIGINT or until stdin closes (so a test harness
// that dies takes the emulator, and its workerd child, with it).
//
//   node serve.mjs [--port N]      (default 0: a free port)
import { Miniflare } from "miniflare";

const NAMESPACE_ID = "0123456789abcdef0123456789abcdef";

const portFlag = process.argv.indexOf("--port");
const port = portFlag >= 0 ? Number(process.argv[portFlag + 1]) : 0;

const mf = new Miniflare({
  host: "127.0.0.1",
  port,
  unsafeLocalExplorer: true,
  workers: [
    {
      config: {
        name: "kvhost",
        compatibilityDate: "2025-01-01",
        manifest: {
          mainModule: "index.mjs",
          modulesRoot: process.cwd(),
          modules: {
            // The explorer lives in miniflare's entry worker, which needs a user worker behind it.
            "index.mjs": {
              type: "esm",
              contents: `export default { fetch() { return new Response("kv host"); } }`,
            },
          },
        },
        env: { TASKS_KV: { type: "kv", id: NAMESPACE_ID } },
      },
    },
  ],
});

const url = await mf.ready;
const base = new URL("cdn-cgi/local/explorer/api", url).href;
console.log(JSON.stringify({ base, namespaceId: NAMESPACE_ID }));

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
