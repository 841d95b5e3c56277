// Shaka Player (served by the API from node_modules) on a job's DASH manifest. Its errors are shown
// beside the video, not thrown: a manifest on a CDN this browser cannot reach is the job's news, not
// the page's failure.
export function attachPlayer(video, manifestUrl, note) {
  const shaka = window.shaka;
  if (!shaka) {
    note('The player did not load.');
    return null;
  }
  shaka.polyfill.installAll();
  if (!shaka.Player.isBrowserSupported()) {
    note('This browser cannot play DASH (no Media Source Extensions).');
    return null;
  }
  const player = new shaka.Player();
  const show = (err) => note(`The player could not play the manifest (Shaka error ${err?.code ?? err?.detail?.code ?? err?.message ?? err}).`);
  player.addEventListener('error', (e) => show(e.detail));
  player
    .attach(video)
    .then(() => player.load(manifestUrl))
    .then(() => note(`Playing ${manifestUrl}`), show);
  return { destroy: () => void player.destroy() };
}
