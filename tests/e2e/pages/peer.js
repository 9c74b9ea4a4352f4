// One telesfu participant in a browser page, driven by the test through page.evaluate.
// Two peer connections: publish (this page offers sendonly audio+video, the SFU answers)
// and subscribe (the SFU offers, this page answers; every re-offer is answered).
"use strict";

const PC_CONFIG = { iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
const GATHER_TIMEOUT_MS = 2000;
const SAMPLE_W = 320, SAMPLE_H = 240, BAR_SLOTS = 16;

let pub = null;
let sub = null;
let localStream = null;
const remote = new Map(); // subscribe mid -> {kind, track, element}
const log = [];

function note(msg) {
  log.push(`${(performance.now() / 1000).toFixed(3)} ${msg}`);
}

function gatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve(true);
      }
    });
  });
}

function watch(pc, name) {
  pc.addEventListener("connectionstatechange", () => note(`${name} connection ${pc.connectionState}`));
  pc.addEventListener("iceconnectionstatechange", () => note(`${name} ice ${pc.iceConnectionState}`));
}

function onRemoteTrack(ev) {
  const mid = ev.transceiver.mid;
  const track = ev.track;
  const old = remote.get(mid);
  if (old) old.element.remove();
  const el = document.createElement(track.kind === "video" ? "video" : "audio");
  el.autoplay = true;
  el.muted = true; // autoplay without a gesture; packets are received and decoded either way
  el.playsInline = true;
  el.dataset.mid = mid;
  el.srcObject = new MediaStream([track]);
  document.getElementById("remote").appendChild(el);
  remote.set(mid, { kind: track.kind, track, element: el });
  note(`track ${track.kind} on mid ${mid}`);
}

// getUserMedia (fake devices), then the publish offer once ICE gathering is done (or after a
// short wait: the SFU is ICE-lite and finds us through our connectivity checks anyway).
async function startPublish() {
  localStream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: SAMPLE_W, height: SAMPLE_H, frameRate: 30 },
  });
  pub = new RTCPeerConnection(PC_CONFIG);
  watch(pub, "publish");
  for (const track of [...localStream.getAudioTracks(), ...localStream.getVideoTracks()]) {
    pub.addTransceiver(track, { direction: "sendonly", streams: [localStream] });
  }
  await pub.setLocalDescription();
  await gatheringComplete(pub, GATHER_TIMEOUT_MS);
  return pub.localDescription.sdp;
}

async function setPublishAnswer(sdp) {
  await pub.setRemoteDescription({ type: "answer", sdp });
}

// Answer one subscribe offer from the SFU (the first one creates the peer connection).
async function answerSubscribe(sdp) {
  if (sub === null) {
    sub = new RTCPeerConnection(PC_CONFIG);
    watch(sub, "subscribe");
    sub.addEventListener("track", onRemoteTrack);
  }
  await sub.setRemoteDescription({ type: "offer", sdp });
  await sub.setLocalDescription();
  return sub.localDescription.sdp;
}

function connectionStates() {
  return {
    publish: pub ? pub.connectionState : "none",
    subscribe: sub ? sub.connectionState : "none",
  };
}

// What getStats says, flattened: inbound-rtp and outbound-rtp per mid, and per peer
// connection its transport and the selected candidate pair's addresses.
async function stats() {
  const out = { inbound: [], outbound: [], transports: [] };
  for (const [name, pc] of [["publish", pub], ["subscribe", sub]]) {
    if (pc === null) continue;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const codecOf = (s) => (s.codecId && byId.has(s.codecId) ? byId.get(s.codecId).mimeType : null);
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        out.inbound.push({
          pc: name, mid: s.mid ?? null, kind: s.kind, ssrc: s.ssrc, codec: codecOf(s),
          packetsReceived: s.packetsReceived ?? 0, packetsLost: s.packetsLost ?? 0,
          bytesReceived: s.bytesReceived ?? 0, jitter: s.jitter ?? 0,
          framesDecoded: s.framesDecoded ?? 0, keyFramesDecoded: s.keyFramesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0,
          framesDropped: s.framesDropped ?? 0, freezeCount: s.freezeCount ?? 0,
          decoderImplementation: s.decoderImplementation ?? null,
          nackCount: s.nackCount ?? 0, pliCount: s.pliCount ?? 0, firCount: s.firCount ?? 0,
          totalSamplesReceived: s.totalSamplesReceived ?? 0, concealedSamples: s.concealedSamples ?? 0,
        });
      } else if (s.type === "outbound-rtp") {
        out.outbound.push({
          pc: name, mid: s.mid ?? null, kind: s.kind, ssrc: s.ssrc, rid: s.rid ?? null, codec: codecOf(s),
          packetsSent: s.packetsSent ?? 0, bytesSent: s.bytesSent ?? 0,
          retransmittedPacketsSent: s.retransmittedPacketsSent ?? 0,
          framesEncoded: s.framesEncoded ?? 0, keyFramesEncoded: s.keyFramesEncoded ?? 0,
          nackCount: s.nackCount ?? 0, pliCount: s.pliCount ?? 0, firCount: s.firCount ?? 0,
          targetBitrate: s.targetBitrate ?? 0,
          qualityLimitationReason: s.qualityLimitationReason ?? null,
        });
      } else if (s.type === "transport") {
        const pair = byId.get(s.selectedCandidatePairId);
        const local = pair ? byId.get(pair.localCandidateId) : undefined;
        const remoteCand = pair ? byId.get(pair.remoteCandidateId) : undefined;
        out.transports.push({
          pc: name, dtlsState: s.dtlsState, iceState: s.iceState ?? null,
          srtpCipher: s.srtpCipher ?? null, dtlsCipher: s.dtlsCipher ?? null,
          local: local ? `${local.address}:${local.port}` : null,
          remote: remoteCand ? `${remoteCand.address}:${remoteCand.port}` : null,
          availableOutgoingBitrate: pair ? pair.availableOutgoingBitrate ?? null : null,
          currentRoundTripTime: pair ? pair.currentRoundTripTime ?? null : null,
        });
      }
    });
  }
  return out;
}

// The picture a remote <video> shows now, drawn into a canvas at 320x240: the mean colour of
// the lower three quarters and the brightest of 16 slots in the top eighth (where the aiortc
// test peer draws its frame counter bar).
function videoSample(mid) {
  const entry = remote.get(mid);
  if (!entry || entry.kind !== "video") return null;
  const v = entry.element;
  if (v.readyState < 2 || v.videoWidth === 0) return { ready: false };
  const canvas = document.createElement("canvas");
  canvas.width = SAMPLE_W;
  canvas.height = SAMPLE_H;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(v, 0, 0, SAMPLE_W, SAMPLE_H);
  const body = ctx.getImageData(0, SAMPLE_H / 4, SAMPLE_W, (SAMPLE_H * 3) / 4).data;
  const rgb = [0, 0, 0];
  for (let i = 0; i < body.length; i += 4) {
    rgb[0] += body[i]; rgb[1] += body[i + 1]; rgb[2] += body[i + 2];
  }
  const n = body.length / 4;
  const band = ctx.getImageData(0, 0, SAMPLE_W, SAMPLE_H / 8).data;
  const slotW = SAMPLE_W / BAR_SLOTS;
  const score = new Array(BAR_SLOTS).fill(0);
  for (let i = 0; i < band.length; i += 4) {
    const x = (i / 4) % SAMPLE_W;
    score[Math.floor(x / slotW)] += band[i] + band[i + 1] + band[i + 2];
  }
  const slot = score.indexOf(Math.max(...score));
  return {
    ready: true, width: v.videoWidth, height: v.videoHeight,
    rgb: rgb.map((c) => c / n), slot, currentTime: v.currentTime,
  };
}

function events() {
  return log.slice();
}

Object.assign(window, {
  startPublish, setPublishAnswer, answerSubscribe, connectionStates, stats, videoSample, events,
});
