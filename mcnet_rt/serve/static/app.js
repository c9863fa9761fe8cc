"use strict";
// The page: choose an avatar, send the camera over WebRTC, show the avatar stream that comes back, and live stats.
// Everything is same-origin (the Content-Security-Policy allows nothing else).

const $ = (id) => document.getElementById(id);
let avatarChoice = null; // {"sample": name} or {"upload": id}
let call = null; // {pc, channel, answered, lastFrame}
let camera = null; // the camera stream, kept when the page calls again
let iceServers = null; // the STUN/TURN servers the server names (GET /api/config)
let retryTimer = null;
const LOST_AFTER_MS = 3000; // an answered call without an avatar frame this long lost its stream: call again
const display = {frames: 0, receiveToDisplay: []}; // avatar frames shown this second, their receive->display ms
let lastServerStats = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "error";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function answerOrError(response) {
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch (e) { body = {error: text || response.statusText}; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function loadSamples() {
  const {samples} = await answerOrError(await fetch("/api/samples"));
  for (const name of samples) $("sample").add(new Option(name.replace("_", " "), name));
  if (samples.length) chooseSample(samples[0]);
}

function chooseSample(name) {
  avatarChoice = {sample: name};
  $("avatar-preview").src = `/api/samples/${encodeURIComponent(name)}`;
  clearError();
}

async function uploadAvatar(file) {
  clearError();
  try {
    const body = await answerOrError(await fetch("/api/avatar", {
      method: "POST", body: file, headers: {"Content-Type": "application/octet-stream"}}));
    avatarChoice = {upload: body.avatar};
    $("avatar-preview").src = URL.createObjectURL(file);
    $("status").textContent = `avatar uploaded (${body.width}×${body.height})`;
  } catch (e) {
    avatarChoice = null;
    $("avatar-preview").removeAttribute("src");
    showError(`Upload refused: ${e.message}`);
  }
}

function iceGatheringDone(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

async function start() {
  clearError();
  if (!avatarChoice) return showError("Choose an avatar first: a sample face or an uploaded image.");
  $("start").disabled = true;
  try {
    camera = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
  } catch (e) {
    $("start").disabled = false;
    return showError(`No camera: ${e.message}`);
  }
  $("self").srcObject = camera;
  await connect();
}

// One call with the camera: offer, answer; a server whose GPUs are all busy answers 503 with Retry-After and the
// page calls again after it. Also used to call again when the avatar stream was lost.
async function connect() {
  retryTimer = null;
  if (!camera) return; // stopped meanwhile
  try {
    if (iceServers === null) iceServers = (await answerOrError(await fetch("/api/config"))).iceServers;
  } catch (e) {
    stop();
    return showError(`Cannot read the server's configuration: ${e.message}`);
  }
  const pc = new RTCPeerConnection({iceServers});
  pc.addTransceiver(camera.getVideoTracks()[0], {direction: "sendrecv"});
  const channel = pc.createDataChannel("control");
  channel.onmessage = (event) => onServerMessage(JSON.parse(event.data));
  channel.onopen = () => { if (Number($("smoothing").value)) send({smoothing: Number($("smoothing").value)}); };
  pc.ontrack = (event) => { $("avatar").srcObject = new MediaStream([event.track]); };
  const thisCall = {pc, channel, answered: false, lastFrame: performance.now()};
  pc.onconnectionstatechange = () => {
    if (call !== thisCall) return;
    $("status").textContent = `connection ${pc.connectionState}`;
    if (pc.connectionState === "failed") callAgain("the connection to the server failed");
  };
  call = thisCall;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    const response = await fetch("/api/offer", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type, avatar: avatarChoice})});
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (response.status === 503 && retryAfter > 0) {
      closeCall();
      $("status").textContent = `all GPUs are busy, retrying in ${retryAfter} s`;
      retryTimer = setTimeout(connect, 1000 * retryAfter);
      return;
    }
    const answer = await answerOrError(response);
    if (call !== thisCall) return pc.close(); // stopped while the offer was answered
    await pc.setRemoteDescription(answer);
    thisCall.answered = true;
    thisCall.lastFrame = performance.now();
    $("status").textContent = `${answer.session}: connecting`;
    for (const id of ["stop", "reset", "smoothing"]) $(id).disabled = false;
  } catch (e) {
    stop();
    showError(`The server refused the call: ${e.message}`);
  }
}

function callAgain(reason) {
  closeCall();
  $("status").textContent = `${reason}; calling again`;
  connect();
}

function closeCall() {
  if (call) call.pc.close();
  call = null;
  $("avatar").srcObject = null;
}

function stop() {
  clearTimeout(retryTimer);
  retryTimer = null;
  closeCall();
  if (camera) camera.getTracks().forEach((track) => track.stop());
  camera = null;
  $("self").srcObject = null;
  $("start").disabled = false;
  for (const id of ["stop", "reset", "smoothing"]) $(id).disabled = true;
  $("status").textContent = "stopped";
}

function send(command) {
  if (call && call.channel.readyState === "open") call.channel.send(JSON.stringify(command));
}

function onServerMessage(message) {
  if (message.error) showError(message.error);
  if (message.stats) lastServerStats = message.stats;
}

function countAvatarFrames() {
  const video = $("avatar");
  const onFrame = (now, metadata) => {
    display.frames += 1;
    if (call) call.lastFrame = performance.now();
    if (metadata.receiveTime !== undefined) display.receiveToDisplay.push(metadata.expectedDisplayTime - metadata.receiveTime);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

const mean = (values) => values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN;
const ms = (value) => Number.isFinite(value) ? `${value.toFixed(0)} ms` : "–";

// capture -> display, estimated as: camera frame encode + network round trip (uplink and downlink) + the server's
// arrival -> avatar-ready time of the latest frame + this page's receive -> display time (jitter buffer, decode,
// render) of the avatar frames.
async function transportMs(pc) {
  let encode = NaN, rtt = NaN;
  (await pc.getStats()).forEach((report) => {
    if (report.type === "outbound-rtp" && report.kind === "video" && report.framesEncoded)
      encode = 1000 * report.totalEncodeTime / report.framesEncoded;
    if (report.type === "candidate-pair" && report.nominated && report.currentRoundTripTime !== undefined)
      rtt = 1000 * report.currentRoundTripTime;
  });
  return encode + rtt;
}

async function updateStats() {
  if (call && call.answered && document.visibilityState === "visible"
      && performance.now() - call.lastFrame > LOST_AFTER_MS) callAgain("the avatar stream stopped");
  $("fps").textContent = call ? `${display.frames}` : "–";
  $("fps").dataset.value = `${display.frames}`;
  const receiveToDisplay = mean(display.receiveToDisplay);
  display.frames = 0;
  display.receiveToDisplay = [];
  if (!call || !lastServerStats) return;
  const server = lastServerStats;
  $("latency").textContent = ms(await transportMs(call.pc) + server.latency_ms + receiveToDisplay);
  $("server-latency").textContent = ms(server.latency_ms);
  $("batch").textContent = `${ms(server.batch_ms)} (${server.batch_size})`;
  const stages = Object.entries((server.session && server.session.stages) || {})
    .filter(([, times]) => times.p50_ms !== undefined);
  $("stages").textContent = stages.map(([name, times]) => `${name} ${times.p50_ms.toFixed(1)} ms`).join(" · ") || "–";
  $("counts").textContent = `${server.received} / ${server.processed} / ${server.late} / ${server.replaced}`;
}

window.addEventListener("DOMContentLoaded", () => {
  $("sample").addEventListener("change", (event) => chooseSample(event.target.value));
  $("upload").addEventListener("change", (event) => { if (event.target.files[0]) uploadAvatar(event.target.files[0]); });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("reset").addEventListener("click", () => send({reset: true}));
  $("smoothing").addEventListener("input", (event) => {
    $("smoothing-value").textContent = event.target.value;
    send({smoothing: Number(event.target.value)});
  });
  window.addEventListener("pagehide", stop); // leave the call at once (the server would notice after 10 s)
  countAvatarFrames();
  setInterval(updateStats, 1000);
  loadSamples().catch((e) => showError(`Cannot list the sample faces: ${e.message}`));
});
