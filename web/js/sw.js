// Service worker: keeps the site's files (list in site.json) so that the page works offline
// after its first load. Cache first; a new build (new "version") replaces the old cache.
const CONFIG = new URL("site.json", self.location).href;

async function siteFiles() {
  const config = await (await fetch(CONFIG, { cache: "no-store" })).json();
  return { name: `lrp-onnx-${config.version}`, files: ["./", ...config.files] };
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const { name, files } = await siteFiles();
    const cache = await caches.open(name);
    await cache.addAll(files.map((f) => new URL(f, self.location).href));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const { name } = await siteFiles();
    for (const key of await caches.keys()) if (key.startsWith("lrp-onnx-") && key !== name) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET" || new URL(event.request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const hit = await caches.match(event.request, { ignoreSearch: true });
    return hit || fetch(event.request);
  })());
});
