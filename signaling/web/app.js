// telesfu reference web client: one page, no build step, no dependencies.
//
// Screens: pre-join (camera/microphone check) -> connecting -> waiting room or call; every
// refusal and ending has its own screen. Media: two RTCPeerConnections, publish (we offer
// sendonly audio+video) and subscribe (the SFU offers, we answer every offer). Signaling is
// JSON over one WebSocket on <same origin>/v1/rtc; the join token comes from the URL fragment
// (#token=...) and never travels to the server in a URL.
"use strict";

(() => {
  // -- constants --------------------------------------------------------------------------------

  const PC_CONFIG = { iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
  const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const PING_MS = 15000;
  const SILENCE_MS = 45000; // no frame at all for this long: the socket is dead
  const RECONNECT_DELAYS_MS = [300, 1000, 2000, 3000, 5000];
  const RECONNECT_GIVE_UP_MS = 90000;
  const RESTART_DELAY_MS = [150, 400]; // the first try after a 1012, uniformly in this range
  const TOKEN_KEY = "telesfu.token";
  // The resume credential of the last `waiting`/`joined`: kept in memory and in sessionStorage
  // (this tab only), so a dropped socket, a media restart (1012) and a reload of the page within
  // the reconnection grace come back with resume{credential}, whatever the join token's expiry.
  const RESUME_KEY = "telesfu.resume";

  // Close codes from signaling/protocol.py (a refused join closes with one of these).
  const CLOSE_CODES = {
    4401: "token_invalid", 4402: "token_expired", 4403: "token_used", 4405: "resume_invalid",
    4404: "appointment_not_found",
    4410: "not_telehealth", 4411: "appointment_cancelled", 4412: "appointment_completed",
    4413: "appointment_no_show", 4420: "outside_join_window", 4421: "not_on_roster",
    4422: "telehealth_not_enabled", 4423: "portal_account_required", 4430: "room_closed",
    4431: "room_full", 4432: "participant_denied", 4433: "removed", 4408: "join_timeout",
    4400: "protocol_error", 4429: "rate_limited", 4409: "replaced",
  };
  const CLOSE_NORMAL = 1000;
  const CLOSE_SERVICE_RESTART = 1012;

  // What a person reads for each ending. `retry`: offer "Try again" (a fresh join with the same link).
  const SCREENS = {
    token_invalid: {
      icon: "i-info", title: "This join link isn't valid",
      body: "Please open your session again from your client portal.",
    },
    token_expired: {
      icon: "i-clock", title: "This join link has expired — open it again from your portal",
      body: "Join links only work for a few minutes, to keep your session private.",
    },
    token_used: {
      icon: "i-lock", title: "This join link was already used — open it again from your portal",
      body: "Each join link works once, to keep your session private. Choose Join in your portal for a new one.",
    },
    resume_invalid: {
      icon: "i-door", title: "We couldn't bring you back into the session",
      body: "Your place in the session has ended. To join again, open your session from your portal.",
    },
    appointment_not_found: {
      icon: "i-calendar-x", title: "We couldn't find this appointment",
      body: "It may have been moved. Please check your portal or contact your provider's office.",
    },
    not_telehealth: {
      icon: "i-calendar", title: "This appointment isn't a video session",
      body: "It's scheduled as an in-person visit. If you expected to meet by video, please contact your provider's office.",
    },
    appointment_cancelled: {
      icon: "i-calendar-x", title: "This appointment was cancelled",
      body: "Please contact your provider's office if you'd like to reschedule.",
    },
    appointment_completed: {
      icon: "i-check", title: "This appointment has already been completed",
      body: "You can find your upcoming appointments in your portal.",
    },
    appointment_no_show: {
      icon: "i-calendar-x", title: "This appointment was marked as missed",
      body: "Please contact your provider's office to find a new time.",
    },
    outside_join_window: {
      icon: "i-clock", title: "Telehealth is not open right now", useServerMessage: true,
      body: "Please come back closer to your appointment time and open your join link from the portal again.",
      retry: true,
    },
    not_on_roster: {
      icon: "i-user-x", title: "This session is for someone else",
      body: "Please sign in to your own portal account and join from there.",
    },
    telehealth_not_enabled: {
      icon: "i-info", title: "Your provider has not enabled telehealth",
      body: "Video sessions aren't available for this appointment yet. Please contact your provider's office.",
      provider: {
        title: "Telehealth isn't enabled for your account",
        body: "Ask your practice administrator to turn on the teletherapy role for you, then join again.",
      },
    },
    portal_account_required: {
      icon: "i-user", title: "An active client portal account is required",
      body: "Please activate or sign in to your client portal account, then open your session from the portal.",
    },
    room_closed: {
      icon: "i-check", title: "The session has ended", body: "Thank you for joining. You can close this window.",
    },
    node_shutdown: {
      icon: "i-door", title: "The video service is restarting",
      body: "Your session was interrupted for maintenance. Please open your session link again in a moment.",
    },
    room_full: {
      icon: "i-people", title: "This session is full",
      body: "Please contact your provider's office if you think you should be in this session.", retry: true,
    },
    participant_denied: {
      icon: "i-user-x", title: "Your provider did not admit you",
      body: "If you think this is a mistake, please contact your provider's office.",
    },
    removed: {
      icon: "i-door", title: "You were removed from the session",
      body: "Your provider ended your part in this session. If you think this is a mistake, please contact your provider's office.",
    },
    replaced: {
      icon: "i-info", title: "You joined from another window",
      body: "This session is open somewhere else now: in another tab or on another device. To use this window instead, open your session from your portal here.",
    },
    join_timeout: {
      icon: "i-wifi-off", title: "We couldn't connect you",
      body: "The connection took too long. Please check your internet connection and try again.", retry: true,
    },
    left: {
      icon: "i-door", title: "You left the session",
      body: "To rejoin while the session is still going, open it again from your portal.",
    },
    left_waiting: {
      icon: "i-door", title: "You left the waiting room",
      body: "To come back while the session is still going, open it again from your portal.",
    },
    connection_lost: {
      icon: "i-wifi-off", title: "We lost the connection",
      body: "Please check your internet connection and try again.", retry: true,
    },
    unreachable: {
      icon: "i-wifi-off", title: "We can't reach the session right now",
      body: "Please check your internet connection and try again in a moment.", retry: true,
    },
    no_token: {
      icon: "i-lock", title: "Please open your session from your portal",
      body: "This page needs a personal join link. Sign in to your client portal and choose Join on your appointment.",
    },
    unsupported: {
      icon: "i-info", title: "This browser can't make video calls",
      body: "Please use a current version of Chrome, Edge, Firefox or Safari.",
    },
    other: {
      icon: "i-info", title: "Something went wrong",
      body: "We couldn't connect you to your session. Please try again.", retry: true,
    },
  };

  // -- state --------------------------------------------------------------------------------------

  const S = {
    screen: "loading",
    phase: "idle", // idle | joining | waiting | admitted | joined | reconnecting | ended
    token: "",
    resume: "", // the resume credential (see RESUME_KEY)
    claims: {},
    gen: 0, // bumped per connection attempt; callbacks of an older one are ignored
    ws: null,
    lastFrameAt: 0,
    pingTimer: 0,
    everJoined: false,
    endCode: "",
    pendingError: null,
    reconnect: { attempt: 0, since: 0, timer: 0 },
    me: "",
    role: "",
    room: null,
    joinedAt: 0,
    participants: new Map(), // pid -> {participant_id, name, role, audioMuted, videoMuted, quality, reconnecting}
    waiting: [], // [{participant_id, name, since}]
    popupsShown: new Set(),
    speakers: new Set(),
    stream: null, // the local MediaStream (audio and/or video)
    micMuted: false,
    camOff: false,
    devices: { audioinput: "", videoinput: "", audiooutput: "" },
    pub: null,
    audioTx: null,
    videoTx: null,
    sub: null,
    subChain: Promise.resolve(),
    mids: new Map(), // subscribe mid -> {mid, track_id, participant_id, kind, muted}
    remote: new Map(), // pid -> {audio: MediaStreamTrack|null, video: MediaStreamTrack|null}
    tiles: new Map(), // pid (or "self") -> tile element
    meter: null,
    mediaReady: Promise.resolve(),
    log: [],
  };

  const $ = (id) => document.getElementById(id);

  function note(text) {
    S.log.push(`${(performance.now() / 1000).toFixed(3)} ${text}`);
    if (S.log.length > 400) S.log.splice(0, 100);
  }

  // -- small helpers ------------------------------------------------------------------------------

  function decodeClaims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
      const claims = JSON.parse(json);
      return claims && typeof claims === "object" ? claims : {};
    } catch (_) {
      return {};
    }
  }

  function initials(name) {
    const words = String(name || "").trim().split(/\s+/).filter((w) => /\p{L}|\p{N}/u.test(w[0] || ""));
    if (words.length === 0) return "?";
    const first = words[0][0];
    const last = words.length > 1 ? words[words.length - 1][0] : "";
    return (first + last).toUpperCase();
  }

  function displayName(p) {
    if (!p) return "Participant";
    if (p.name) return p.name;
    return p.role === "provider" ? "Your provider" : "Participant";
  }

  function minutesSince(iso) {
    const t = Date.parse(iso || "");
    if (!Number.isFinite(t)) return "";
    const m = Math.floor((Date.now() - t) / 60000);
    if (m < 1) return "just now";
    if (m === 1) return "for 1 minute";
    if (m < 60) return `for ${m} minutes`;
    const h = Math.floor(m / 60);
    return h >= 24 ? "for over a day" : `for ${h} h ${m % 60} min`;
  }

  function announce(text, urgent = false) {
    const el = urgent ? $("alerter") : $("announcer");
    el.textContent = "";
    // a fresh text node so repeated messages are read again
    setTimeout(() => { el.textContent = text; }, 30);
  }

  function setIconButton(btn, off, labels) {
    btn.classList.toggle("is-off", off);
    btn.setAttribute("aria-pressed", String(off));
    const label = off ? labels[1] : labels[0];
    const span = btn.querySelector(".ctl-label");
    if (span) span.textContent = label;
    btn.setAttribute("aria-label", label);
    btn.title = label;
  }

  // -- screens ------------------------------------------------------------------------------------

  function show(screen) {
    if (S.screen === screen) return;
    S.screen = screen;
    document.body.dataset.screen = screen;
    for (const el of document.querySelectorAll(".screen")) el.hidden = el.id !== `screen-${screen}`;
    const heading = document.querySelector(`#screen-${screen} [tabindex="-1"]`);
    if (heading && screen !== "call") heading.focus({ preventScroll: true });
    note(`screen ${screen}`);
  }

  function showMessage(code, serverMessage) {
    S.endCode = code;
    const base = SCREENS[code] || SCREENS.other;
    const spec = S.role === "provider" || S.claims.role === "provider" ? { ...base, ...(base.provider || {}) } : base;
    $("message-icon").setAttribute("href", `#${spec.icon}`);
    $("message-card").dataset.code = code;
    $("message-title").textContent = spec.useServerMessage && serverMessage ? serverMessage.split(". ")[0].replace(/\.$/, "") : spec.title;
    $("message-body").textContent = spec.useServerMessage && serverMessage && serverMessage.includes(". ")
      ? serverMessage.slice(serverMessage.indexOf(". ") + 2) : spec.body;
    const hint = $("message-hint");
    hint.hidden = !(SCREENS[code] === undefined && serverMessage);
    hint.textContent = hint.hidden ? "" : serverMessage;
    const actions = $("message-actions");
    actions.replaceChildren();
    if (spec.retry && (S.token || S.resume)) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "btn btn-primary";
      b.id = "retry-btn";
      b.textContent = spec.retryLabel || "Try again";
      b.addEventListener("click", () => retryFromMessage());
      actions.appendChild(b);
    }
    document.title = `${spec.title} · Video session`;
    show("message");
    announce(spec.title, true);
  }

  // -- local media --------------------------------------------------------------------------------

  function audioConstraints() {
    return S.devices.audioinput ? { ...AUDIO, deviceId: { exact: S.devices.audioinput } } : AUDIO;
  }

  function videoConstraints() {
    return S.devices.videoinput ? { ...VIDEO, deviceId: { exact: S.devices.videoinput } } : VIDEO;
  }

  async function getMedia(audio, video) {
    const c = { audio: audio ? audioConstraints() : false, video: video ? videoConstraints() : false };
    try {
      return await navigator.mediaDevices.getUserMedia(c);
    } catch (e) {
      // a remembered device that went away: fall back to the default one
      if (e && e.name === "OverconstrainedError") {
        if (audio) S.devices.audioinput = "";
        if (video) S.devices.videoinput = "";
        return navigator.mediaDevices.getUserMedia({ audio: audio ? AUDIO : false, video: video ? VIDEO : false });
      }
      throw e;
    }
  }

  async function openLocalMedia() {
    S.stream = new MediaStream();
    const problems = [];
    let got = null;
    try {
      got = await getMedia(true, true);
    } catch (e) {
      note(`getUserMedia audio+video failed: ${e && e.name}`);
      for (const [a, v, what] of [[true, false, "camera"], [false, true, "microphone"]]) {
        try {
          got = await getMedia(a, v);
          problems.push(what);
          break;
        } catch (_) { /* try the other one */ }
      }
      if (!got) problems.push("camera", "microphone");
      if (e && (e.name === "NotAllowedError" || e.name === "SecurityError")) problems.blocked = true;
    }
    if (got) for (const t of got.getTracks()) S.stream.addTrack(t);
    if (!S.stream.getVideoTracks().length) S.camOff = true;
    reportMediaProblems(problems);
    refreshLocalViews();
    startMeter();
    await fillDevicePickers();
  }

  function reportMediaProblems(problems) {
    const p = $("media-problem");
    if (!problems.length) {
      p.hidden = true;
      return;
    }
    const what = problems.length > 1 ? "your camera or microphone" : `your ${problems[0]}`;
    p.textContent = problems.blocked
      ? `Your browser blocked ${what}. Allow access in the address bar, then reload this page. You can still join.`
      : `We couldn't start ${what}. Check that it's connected and not used by another app. You can still join.`;
    p.hidden = false;
  }

  function localTrack(kind) {
    if (!S.stream) return null;
    const list = kind === "audio" ? S.stream.getAudioTracks() : S.stream.getVideoTracks();
    return list.find((t) => t.readyState === "live") || null;
  }

  function refreshLocalViews() {
    const video = localTrack("video");
    const showVideo = Boolean(video) && !S.camOff;
    for (const [vid, off] of [["preview-video", "preview-off"], ["waiting-video", "waiting-off"]]) {
      const el = $(vid);
      if (showVideo) {
        if (!el.srcObject || el.srcObject.getVideoTracks()[0] !== video) el.srcObject = new MediaStream([video]);
      } else {
        el.srcObject = null;
      }
      $(off).hidden = showVideo;
    }
    $("preview-off-text").textContent = localTrack("video") || S.camOff ? "Your camera is off" : "No camera found";
    const self = S.tiles.get("self");
    if (self) setTileVideo(self, showVideo ? video : null, false);
    const audio = localTrack("audio");
    if (audio) audio.enabled = !S.micMuted;
    const micLabels = ["Turn off microphone", "Turn on microphone"];
    const camLabels = ["Turn off camera", "Turn on camera"];
    for (const id of ["pre-mic", "wait-mic"]) {
      setIconButton($(id), S.micMuted || !audio, micLabels);
      $(id).disabled = !audio;
    }
    for (const id of ["pre-cam", "wait-cam"]) setIconButton($(id), S.camOff, camLabels);
    setIconButton($("ctl-mic"), S.micMuted || !audio, ["Mute", "Unmute"]);
    $("ctl-mic").disabled = !audio;
    setIconButton($("ctl-cam"), S.camOff, ["Stop video", "Start video"]);
    if (self) {
      self.querySelector(".mic-off").toggleAttribute("hidden", !(S.micMuted || !audio));
    }
  }

  async function setMicMuted(muted, { announceIt = false } = {}) {
    S.micMuted = muted;
    refreshLocalViews();
    if (S.phase === "joined") send({ type: "mute", track_id: "audio", muted });
    if (announceIt) announce(muted ? "Microphone off" : "Microphone on");
  }

  async function setCamOff(off) {
    if (off) {
      S.camOff = true;
      const t = localTrack("video");
      if (t) {
        // stop the device so the camera light goes out
        t.stop();
        S.stream.removeTrack(t);
      }
      if (S.videoTx) await S.videoTx.sender.replaceTrack(null).catch(() => {});
      refreshLocalViews();
      if (S.phase === "joined") send({ type: "mute", track_id: "video", muted: true });
      announce("Camera off");
      return;
    }
    let track = localTrack("video");
    if (!track) {
      try {
        const s = await getMedia(false, true);
        track = s.getVideoTracks()[0];
        S.stream.addTrack(track);
      } catch (e) {
        note(`camera restart failed: ${e && e.name}`);
        toast("We couldn't start your camera");
        return;
      }
    }
    S.camOff = false;
    if (S.videoTx) await S.videoTx.sender.replaceTrack(track).catch(() => {});
    refreshLocalViews();
    if (S.phase === "joined") send({ type: "mute", track_id: "video", muted: false });
    announce("Camera on");
    fillDevicePickers();
  }

  async function switchDevice(kind, deviceId) {
    S.devices[kind] = deviceId;
    if (kind === "audiooutput") {
      for (const el of document.querySelectorAll("#audio-sinks audio")) {
        if (el.setSinkId) el.setSinkId(deviceId).catch(() => {});
      }
      return;
    }
    const isVideo = kind === "videoinput";
    if (isVideo && S.camOff) return; // used the next time the camera starts
    const old = localTrack(isVideo ? "video" : "audio");
    if (old) {
      old.stop();
      S.stream.removeTrack(old);
    }
    try {
      const s = await getMedia(!isVideo, isVideo);
      const track = s.getTracks()[0];
      S.stream.addTrack(track);
      const tx = isVideo ? S.videoTx : S.audioTx;
      if (tx) await tx.sender.replaceTrack(track);
      if (!isVideo) startMeter();
    } catch (e) {
      note(`switch ${kind} failed: ${e && e.name}`);
      toast(`We couldn't start that ${isVideo ? "camera" : "microphone"}`);
    }
    refreshLocalViews();
  }

  async function fillDevicePickers() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch (_) {
      return;
    }
    const current = {
      audioinput: (localTrack("audio") && localTrack("audio").getSettings().deviceId) || S.devices.audioinput,
      videoinput: (localTrack("video") && localTrack("video").getSettings().deviceId) || S.devices.videoinput,
      audiooutput: S.devices.audiooutput,
    };
    for (const kind of ["videoinput", "audioinput", "audiooutput"]) {
      const select = $(`pick-${kind}`);
      const list = devices.filter((d) => d.kind === kind && d.deviceId);
      select.replaceChildren();
      list.forEach((d, i) => {
        const o = document.createElement("option");
        o.value = d.deviceId;
        const fallback = { videoinput: "Camera", audioinput: "Microphone", audiooutput: "Speaker" }[kind];
        o.textContent = d.label || `${fallback} ${i + 1}`;
        o.selected = d.deviceId === current[kind];
        select.appendChild(o);
      });
      if (!list.length) {
        const o = document.createElement("option");
        o.textContent = kind === "videoinput" ? "No camera found" : kind === "audioinput" ? "No microphone found" : "Default";
        o.value = "";
        select.appendChild(o);
      }
      select.disabled = list.length < 1;
    }
    const canPickOutput = "setSinkId" in HTMLMediaElement.prototype
      && devices.some((d) => d.kind === "audiooutput" && d.deviceId && d.deviceId !== "default");
    $("field-audiooutput").hidden = !canPickOutput;
  }

  // A small level meter under the preview, so a client can see the microphone works.
  function startMeter() {
    stopMeter();
    const track = localTrack("audio");
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!track || !AC) return;
    try {
      const ctx = new AC();
      const src = ctx.createMediaStreamSource(new MediaStream([track]));
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 512;
      src.connect(analyser);
      const buf = new Uint8Array(analyser.fftSize);
      const bar = $("meter-bar");
      let raf = 0;
      const tick = () => {
        analyser.getByteTimeDomainData(buf);
        let peak = 0;
        for (let i = 0; i < buf.length; i++) peak = Math.max(peak, Math.abs(buf[i] - 128));
        const level = S.micMuted ? 0 : Math.min(1, peak / 64);
        bar.style.transform = `scaleX(${level.toFixed(3)})`;
        raf = requestAnimationFrame(tick);
      };
      tick();
      S.meter = { ctx, stop: () => cancelAnimationFrame(raf) };
    } catch (_) {
      S.meter = null;
    }
  }

  function stopMeter() {
    if (!S.meter) return;
    S.meter.stop();
    S.meter.ctx.close().catch(() => {});
    S.meter = null;
  }

  function stopLocalMedia() {
    stopMeter();
    if (S.stream) for (const t of S.stream.getTracks()) t.stop();
    S.stream = null;
    for (const id of ["preview-video", "waiting-video"]) $(id).srcObject = null;
    const self = S.tiles.get("self");
    if (self) setTileVideo(self, null, false);
  }

  // -- signaling ----------------------------------------------------------------------------------

  function rtcUrl() {
    const u = new URL("v1/rtc", new URL(".", location.href));
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    u.hash = "";
    u.search = "";
    return u.toString();
  }

  function send(m) {
    if (S.ws && S.ws.readyState === WebSocket.OPEN) {
      S.ws.send(JSON.stringify(m));
      return true;
    }
    return false;
  }

  function connect() {
    const gen = ++S.gen;
    clearInterval(S.pingTimer);
    let ws;
    try {
      ws = new WebSocket(rtcUrl());
    } catch (e) {
      note(`websocket failed: ${e}`);
      onSocketGone(gen, 1006, false);
      return;
    }
    S.ws = ws;
    S.pendingError = null;
    let opened = false;
    ws.addEventListener("open", () => {
      if (gen !== S.gen) return;
      opened = true;
      S.lastFrameAt = Date.now();
      // back with the resume credential when there is one; the (single-use) token otherwise
      note(S.resume ? "send resume" : "send join");
      ws.send(JSON.stringify(S.resume ? { type: "resume", credential: S.resume } : { type: "join", token: S.token }));
      S.pingTimer = setInterval(() => {
        if (gen !== S.gen) return;
        if (Date.now() - S.lastFrameAt > SILENCE_MS) {
          note("socket silent: closing it");
          ws.close(4000, "silent");
          onSocketGone(gen, 1006, true);
          return;
        }
        send({ type: "ping" });
      }, PING_MS);
    });
    ws.addEventListener("message", (ev) => {
      if (gen !== S.gen) return;
      S.lastFrameAt = Date.now();
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (!m || typeof m.type !== "string") return;
      try {
        onMessage(m, gen);
      } catch (e) {
        note(`handler ${m.type} failed: ${e && e.stack}`);
        console.error(e);
      }
    });
    ws.addEventListener("close", (ev) => {
      note(`socket closed ${ev.code} ${ev.reason}`);
      if (gen !== S.gen) return;
      onSocketGone(gen, ev.code, opened, ev.reason);
    });
  }

  function onSocketGone(gen, code, opened, reason) {
    if (gen !== S.gen) return;
    S.gen++; // nothing of this connection counts any more
    clearInterval(S.pingTimer);
    S.ws = null;
    if (S.phase === "ended") return;
    const refusal = CLOSE_CODES[code] || (code >= 4400 && code <= 4499 ? "other" : "");
    if (refusal) {
      const err = S.pendingError;
      endSession(err && SCREENS[err.code] ? err.code : refusal, err ? err.message : reason);
      return;
    }
    if (S.pendingError && !S.everJoined && S.phase === "joining" && code === CLOSE_NORMAL) {
      endSession(S.pendingError.code, S.pendingError.message);
      return;
    }
    if (code === CLOSE_NORMAL && S.phase !== "reconnecting") {
      endSession("room_closed");
      return;
    }
    // a dropped socket or a media server restart (1012): resume with the credential
    if (S.phase === "joining" && !S.everJoined && !opened) {
      endSession("unreachable");
      return;
    }
    startReconnect(code);
  }

  function startReconnect(code) {
    const wasJoined = S.phase === "joined" || S.phase === "admitted";
    if (S.phase !== "reconnecting") {
      S.reconnect.since = Date.now();
      S.reconnect.attempt = 0;
      S.reconnect.from = wasJoined || S.everJoined ? "call" : "waiting";
    }
    S.phase = "reconnecting";
    closePeerConnections();
    if (S.reconnect.from === "call") {
      show("call");
      $("reconnecting").hidden = false;
    } else {
      show("connecting");
      $("connecting-title").textContent = "Reconnecting…";
    }
    announce("Reconnecting…");
    if (Date.now() - S.reconnect.since > RECONNECT_GIVE_UP_MS) {
      endSession("connection_lost");
      return;
    }
    // after a media server restart come back soon: the node holds a join until the new worker is
    // up; spread over a moment so a worker's participants do not all arrive at once
    const delay = code === CLOSE_SERVICE_RESTART && S.reconnect.attempt === 0
      ? RESTART_DELAY_MS[0] + Math.random() * (RESTART_DELAY_MS[1] - RESTART_DELAY_MS[0])
      : RECONNECT_DELAYS_MS[Math.min(S.reconnect.attempt, RECONNECT_DELAYS_MS.length - 1)];
    S.reconnect.attempt++;
    clearTimeout(S.reconnect.timer);
    S.reconnect.timer = setTimeout(() => {
      if (S.phase === "reconnecting") connect();
    }, delay);
    note(`reconnect in ${Math.round(delay)} ms (close ${code})`);
  }

  function onMessage(m, gen) {
    switch (m.type) {
      case "waiting": return onWaiting(m);
      case "admitted": return onAdmitted();
      case "denied": return endSession("participant_denied", m.reason);
      case "joined": return onJoined(m, gen);
      case "publish_answer": return onPublishAnswer(m, gen);
      case "subscribe_offer": return onSubscribeOffer(m, gen);
      case "participant_joined": return onParticipantJoined(m.participant);
      case "participant_left": return onParticipantLeft(m.participant_id, m.reason);
      case "participant_reconnecting": return onParticipantReconnecting(m.participant_id);
      case "participant_waiting": return onParticipantWaiting(m.participant);
      case "waiting_list": return onWaitingList(m.participants || []);
      case "track_published": return onTrackState(m.track, false);
      case "track_unpublished": return onTrackState(m.track, true);
      case "track_muted": return onTrackMuted(m);
      case "active_speakers": return onActiveSpeakers(m.participant_ids || []);
      case "connection_quality": return onConnectionQuality(m.participants || {});
      case "room_closed": return endSession(m.reason === "node_shutdown" ? "node_shutdown" : "room_closed", m.reason);
      case "node_draining": return toast("The video service is restarting soon: this session may be interrupted.", 8000);
      case "error": return onError(m);
      case "pong": return undefined;
      default: note(`unknown message ${m.type}`);
    }
    return undefined;
  }

  function onError(m) {
    note(`error ${m.code}: ${m.message}`);
    if (S.phase === "joining" || S.phase === "reconnecting" || m.code in SCREENS || m.code === "participant_denied") {
      // a refusal: the socket closes next with a 44xx code; keep the reason for the screen
      S.pendingError = { code: String(m.code || "other"), message: String(m.message || "") };
      return;
    }
    if (m.code === "media_restarted" || m.code === "rate_limited") return; // the reconnect overlay says enough
    if (S.role === "provider" && m.message) toast(`That didn't go through: ${m.message}`, 5000);
  }

  function keepResume(credential) {
    if (typeof credential !== "string" || !credential) return;
    S.resume = credential;
    try { sessionStorage.setItem(RESUME_KEY, credential); } catch (_) { /* private mode: memory only */ }
  }

  function dropResume() {
    S.resume = "";
    try { sessionStorage.removeItem(RESUME_KEY); } catch (_) { /* private mode */ }
  }

  function onWaiting(m) {
    keepResume(m.resume);
    S.phase = "waiting";
    S.reconnect.attempt = 0;
    clearTimeout(S.reconnect.timer);
    $("waiting-title").textContent = m.provider_present ? "Your provider will let you in soon" : "Waiting for your provider";
    $("waiting-message").textContent = m.provider_present
      ? "Your provider knows you're here. Please keep this page open."
      : "Your provider will let you in when your session begins. Please keep this page open.";
    document.title = "Waiting room · Video session";
    const wasWaiting = S.screen === "waiting";
    show("waiting");
    refreshLocalViews();
    if (!wasWaiting || m.provider_present) announce($("waiting-title").textContent);
  }

  function onAdmitted() {
    S.phase = "admitted";
    $("connecting-title").textContent = "You're being let in…";
    show("connecting");
    announce("You're being let in");
  }

  function onJoined(m, gen) {
    keepResume(m.resume);
    const wasReconnecting = S.phase === "reconnecting";
    S.phase = "joined";
    S.everJoined = true;
    S.reconnect.attempt = 0;
    clearTimeout(S.reconnect.timer);
    S.room = m.room || null;
    const me = m.participant || {};
    S.me = String(me.participant_id || S.claims.sub || "");
    S.role = String(me.role || S.claims.role || "client");
    if (!S.joinedAt) S.joinedAt = Date.now();
    document.body.dataset.role = S.role;
    $("ctl-end").hidden = S.role !== "provider";
    // the room as it is now
    const seen = new Set();
    for (const p of m.participants || []) {
      if (!p || p.participant_id === S.me) continue;
      seen.add(p.participant_id);
      upsertParticipant(p);
    }
    for (const pid of [...S.participants.keys()]) if (!seen.has(pid)) removeParticipant(pid);
    S.waiting = Array.isArray(m.waiting) ? m.waiting : [];
    $("reconnecting").hidden = true;
    document.title = "Video session";
    show("call");
    ensureSelfTile();
    layout();
    renderPanel();
    syncPopups(S.role === "provider");
    startTimer();
    announce(wasReconnecting ? "Reconnected" : "You joined the session");
    startPublish(gen).catch((e) => {
      note(`publish failed: ${e && e.stack}`);
      toast("We couldn't send your video. Trying again…");
    });
  }

  // -- publish ------------------------------------------------------------------------------------

  async function startPublish(gen) {
    closePc("pub");
    const pc = new RTCPeerConnection(PC_CONFIG);
    S.pub = pc;
    const streams = S.stream ? [S.stream] : [];
    const audio = localTrack("audio");
    const video = S.camOff ? null : localTrack("video");
    S.audioTx = pc.addTransceiver(audio || "audio", { direction: "sendonly", streams });
    S.videoTx = pc.addTransceiver(video || "video", { direction: "sendonly", streams });
    pc.addEventListener("connectionstatechange", () => {
      note(`publish ${pc.connectionState}`);
      if (pc === S.pub && pc.connectionState === "failed" && gen === S.gen) mediaFailed();
    });
    await pc.setLocalDescription();
    if (gen !== S.gen || pc !== S.pub) return;
    send({ type: "publish_offer", sdp: pc.localDescription.sdp });
  }

  async function onPublishAnswer(m, gen) {
    const pc = S.pub;
    if (!pc || pc.signalingState !== "have-local-offer") return;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
    } catch (e) {
      note(`publish answer rejected: ${e}`);
      return;
    }
    if (gen !== S.gen) return;
    // tell the room what was off before we joined
    if (S.micMuted || !localTrack("audio")) send({ type: "mute", track_id: "audio", muted: true });
    if (S.camOff) send({ type: "mute", track_id: "video", muted: true });
  }

  function mediaFailed() {
    // ICE or DTLS failed under a live socket: start the whole session over
    note("media connection failed: rejoining");
    const ws = S.ws;
    onSocketGone(S.gen, 1006, true);
    if (ws) ws.close(4000, "media failed");
  }

  // -- subscribe ----------------------------------------------------------------------------------

  function onSubscribeOffer(m, gen) {
    S.subChain = S.subChain
      .then(() => answerSubscribe(m, gen))
      .catch((e) => note(`subscribe answer failed: ${e && e.stack}`));
  }

  async function answerSubscribe(m, gen) {
    if (gen !== S.gen) return;
    if (!S.sub) {
      const pc = new RTCPeerConnection(PC_CONFIG);
      S.sub = pc;
      pc.addEventListener("track", () => reconcileRemote());
      pc.addEventListener("connectionstatechange", () => {
        note(`subscribe ${pc.connectionState}`);
        if (pc === S.sub && pc.connectionState === "failed" && gen === S.gen) mediaFailed();
      });
    }
    const pc = S.sub;
    const mids = new Map();
    for (const t of m.tracks || []) if (t && t.mid != null) mids.set(String(t.mid), t);
    note(`subscribe offer: ${JSON.stringify([...mids.values()].map((t) => [t.mid, t.participant_id, t.kind]))}`);
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
    } catch (e) {
      S.failedOffer = m.sdp;
      note(`subscribe offer rejected: ${e && e.message}`);
      // an offer with tracks we cannot take leaves us without someone's media: start over
      if (mids.size && gen === S.gen) mediaFailed();
      return;
    }
    S.mids = mids;
    for (const t of mids.values()) {
      const p = S.participants.get(t.participant_id);
      if (!p) continue; // tracks of someone who left (or not announced yet) make no tile
      if (t.kind === "audio") p.audioMuted = Boolean(t.muted);
      if (t.kind === "video") p.videoMuted = Boolean(t.muted);
    }
    await pc.setLocalDescription();
    if (gen !== S.gen || pc !== S.sub) return;
    send({ type: "subscribe_answer", sdp: pc.localDescription.sdp });
    reconcileRemote();
  }

  // Which remote track goes to which tile: the mid -> participant mapping of the last offer.
  function reconcileRemote() {
    const next = new Map();
    if (S.sub) {
      for (const tr of S.sub.getTransceivers()) {
        const info = tr.mid != null ? S.mids.get(String(tr.mid)) : undefined;
        if (!info || tr.currentDirection === "inactive" || tr.currentDirection === "stopped") continue;
        const pid = info.participant_id;
        if (!pid || pid === S.me) continue;
        if (!next.has(pid)) next.set(pid, { audio: null, video: null });
        next.get(pid)[info.kind === "audio" ? "audio" : "video"] = tr.receiver.track;
      }
    }
    S.remote = next;
    for (const [pid, p] of S.participants) {
      const tile = ensureTile(pid);
      const media = next.get(pid) || { audio: null, video: null };
      setTileVideo(tile, media.video, p.videoMuted);
      setParticipantAudio(pid, media.audio);
      refreshTile(pid);
    }
    layout();
  }

  function setTileVideo(tile, track, muted) {
    const video = tile.querySelector("video");
    if (tile._track !== track) {
      if (tile._track) {
        tile._track.removeEventListener("mute", tile._onMute);
        tile._track.removeEventListener("unmute", tile._onMute);
      }
      tile._track = track;
      if (track) {
        tile._onMute = () => updateAvatar(tile);
        track.addEventListener("mute", tile._onMute);
        track.addEventListener("unmute", tile._onMute);
        video.srcObject = new MediaStream([track]);
        video.play().catch(() => {});
      } else {
        video.srcObject = null;
      }
    }
    tile._videoMuted = muted;
    updateAvatar(tile);
  }

  function updateAvatar(tile) {
    const t = tile._track;
    const live = Boolean(t) && t.readyState === "live" && !tile._videoMuted && (tile.dataset.pid === "self" || !t.muted);
    tile.classList.toggle("no-video", !live);
  }

  function setParticipantAudio(pid, track) {
    let el = document.querySelector(`#audio-sinks audio[data-pid="${CSS.escape(pid)}"]`);
    if (!track) {
      if (el) el.remove();
      return;
    }
    if (!el) {
      el = document.createElement("audio");
      el.autoplay = true;
      el.dataset.pid = pid;
      $("audio-sinks").appendChild(el);
      if (S.devices.audiooutput && el.setSinkId) el.setSinkId(S.devices.audiooutput).catch(() => {});
    }
    if (!el.srcObject || el.srcObject.getAudioTracks()[0] !== track) {
      el.srcObject = new MediaStream([track]);
      el.play().catch((e) => {
        if (e && e.name === "NotAllowedError") $("sound-btn").hidden = false;
      });
    }
  }

  // -- participants and tiles ---------------------------------------------------------------------

  function ensureParticipant(pid) {
    let p = S.participants.get(pid);
    if (!p) {
      p = { participant_id: pid, name: "", role: "", audioMuted: false, videoMuted: false, quality: "", reconnecting: false };
      S.participants.set(pid, p);
      ensureTile(pid);
    }
    return p;
  }

  function upsertParticipant(info) {
    const p = ensureParticipant(String(info.participant_id));
    if (info.name) p.name = String(info.name);
    if (info.role) p.role = String(info.role);
    p.reconnecting = false;
    refreshTile(p.participant_id);
    return p;
  }

  function removeParticipant(pid) {
    S.participants.delete(pid);
    S.speakers.delete(pid);
    const tile = S.tiles.get(pid);
    if (tile) {
      setTileVideo(tile, null, false);
      tile.remove();
      S.tiles.delete(pid);
    }
    setParticipantAudio(pid, null);
  }

  function ensureTile(pid) {
    let tile = S.tiles.get(pid);
    if (tile) return tile;
    tile = $("tile-template").content.firstElementChild.cloneNode(true);
    tile.dataset.pid = pid;
    tile.classList.add("no-video");
    const video = tile.querySelector("video");
    video.addEventListener("resize", () => {
      // the tile takes the picture's shape (1:1 layout), so nothing is cropped or letterboxed
      if (video.videoWidth && video.videoHeight) tile.style.setProperty("--ar", (video.videoWidth / video.videoHeight).toFixed(4));
      updateAvatar(tile);
    });
    if (pid === "self") {
      tile.classList.add("self");
      tile.querySelector("video").classList.add("mirror");
      $("stage").appendChild(tile);
    } else {
      // remote tiles before the self tile
      $("stage").insertBefore(tile, S.tiles.get("self") || null);
    }
    S.tiles.set(pid, tile);
    return tile;
  }

  function ensureSelfTile() {
    const tile = ensureTile("self");
    const name = S.claims.name || "";
    tile.querySelector(".name").textContent = name ? `${name} (you)` : "You";
    tile.querySelector(".initials").textContent = initials(name || "You");
    tile.setAttribute("aria-label", "Your video");
    refreshLocalViews();
  }

  function refreshTile(pid) {
    const p = S.participants.get(pid);
    const tile = S.tiles.get(pid);
    if (!p || !tile) return;
    const name = displayName(p);
    tile.querySelector(".name").textContent = name;
    tile.querySelector(".initials").textContent = initials(name);
    tile.querySelector(".mic-off").toggleAttribute("hidden", !p.audioMuted);
    tile._videoMuted = p.videoMuted;
    updateAvatar(tile);
    const status = tile.querySelector(".tile-status");
    status.hidden = !p.reconnecting;
    status.textContent = p.reconnecting ? "Reconnecting…" : "";
    tile.classList.toggle("speaking", S.speakers.has(pid));
    tile.setAttribute("aria-label", `${name}${p.audioMuted ? ", muted" : ""}${p.videoMuted ? ", camera off" : ""}`);
  }

  function setQuality(tile, q) {
    const el = tile.querySelector(".quality");
    const quality = ["excellent", "good", "poor", "lost"].includes(q) ? q : "unknown";
    el.dataset.quality = quality;
    const words = { excellent: "excellent", good: "good", poor: "poor", lost: "lost", unknown: "unknown" };
    el.setAttribute("aria-label", `Connection ${words[quality]}`);
    el.title = `Connection: ${words[quality]}`;
  }

  function onParticipantJoined(info) {
    if (!info || !info.participant_id || info.participant_id === S.me) return;
    const known = S.participants.has(info.participant_id);
    const p = upsertParticipant(info);
    reconcileRemote(); // tracks offered before the announcement find their tile now
    renderPanel();
    if (!known) {
      announce(`${displayName(p)} joined`);
      toast(`${displayName(p)} joined`);
    }
  }

  function onParticipantLeft(pid, reason) {
    if (pid === S.me) {
      endSession(reason === "removed" ? "removed" : "room_closed");
      return;
    }
    const p = S.participants.get(pid);
    if (!p) return;
    removeParticipant(pid);
    layout();
    renderPanel();
    const text = reason === "removed" ? `${displayName(p)} was removed` : `${displayName(p)} left`;
    announce(text);
    toast(text);
  }

  function onParticipantReconnecting(pid) {
    const p = S.participants.get(pid);
    if (!p) return;
    p.reconnecting = true;
    refreshTile(pid);
  }

  function onTrackState(track, gone) {
    if (!track || !track.participant_id || track.participant_id === S.me) return;
    const p = S.participants.get(track.participant_id);
    if (!p) return;
    if (track.kind === "audio") p.audioMuted = gone ? false : Boolean(track.muted);
    if (track.kind === "video") p.videoMuted = gone ? false : Boolean(track.muted);
    p.reconnecting = false;
    refreshTile(p.participant_id);
    renderPanel();
  }

  function onTrackMuted(m) {
    const muted = Boolean(m.muted);
    if (m.participant_id === S.me) {
      if (m.by && m.by !== S.me && muted) {
        // the provider muted us: do it here too, and say so
        if (m.kind === "video") {
          setCamOff(true);
          toast("Your provider turned off your camera", 6000);
          announce("Your provider turned off your camera", true);
        } else {
          S.micMuted = true;
          refreshLocalViews();
          toast("Your provider muted your microphone", 6000);
          announce("Your provider muted your microphone", true);
        }
      }
      return;
    }
    const p = S.participants.get(m.participant_id);
    if (!p) return;
    if (m.kind === "audio") p.audioMuted = muted;
    if (m.kind === "video") p.videoMuted = muted;
    refreshTile(p.participant_id);
    renderPanel();
  }

  function onActiveSpeakers(ids) {
    S.speakers = new Set(ids.map(String));
    for (const [pid, tile] of S.tiles) {
      const key = pid === "self" ? S.me : pid;
      tile.classList.toggle("speaking", S.speakers.has(key));
    }
  }

  function onConnectionQuality(map) {
    for (const [pid, q] of Object.entries(map)) {
      const tile = S.tiles.get(pid === S.me ? "self" : pid);
      if (tile) setQuality(tile, q && q.quality);
      const p = S.participants.get(pid);
      if (p) p.quality = q && q.quality;
    }
  }

  // -- layout -------------------------------------------------------------------------------------

  function layout() {
    const stage = $("stage");
    const remotes = S.participants.size;
    const kind = remotes === 0 ? "solo" : remotes === 1 ? "one" : "grid";
    stage.dataset.layout = kind;
    const noteEl = $("stage-note");
    if (kind === "solo") {
      noteEl.hidden = false;
      noteEl.textContent = S.role === "provider"
        ? (S.waiting.length ? "Someone is in the waiting room. Open Participants to let them in." : "Your client will appear here when they join.")
        : "You're in. Your provider will join you shortly.";
    } else {
      noteEl.hidden = true;
    }
    if (kind === "grid") {
      const n = remotes + 1; // the self tile is part of the grid
      const rect = stage.getBoundingClientRect();
      const w = Math.max(rect.width, 1);
      const h = Math.max(rect.height, 1);
      let best = { cols: 1, rows: n, size: 0 };
      for (let cols = 1; cols <= n; cols++) {
        const rows = Math.ceil(n / cols);
        const tw = w / cols;
        const th = h / rows;
        const size = Math.min(tw, th * (16 / 9)) * Math.min(th, tw * (9 / 16)); // area of a 16:9 tile that fits
        if (size > best.size) best = { cols, rows, size };
      }
      stage.style.setProperty("--cols", best.cols);
      stage.style.setProperty("--rows", best.rows);
    }
    for (const [pid, tile] of S.tiles) tile.classList.toggle("main", kind === "one" && pid !== "self");
    const self = S.tiles.get("self");
    if (self) {
      const name = S.claims.name || "";
      self.querySelector(".name").textContent = kind === "one" || !name ? "You" : `${name} (you)`;
    }
  }

  // -- the provider's side: waiting room popups and the participants panel ------------------------

  function onParticipantWaiting(info) {
    if (!info || !info.participant_id) return;
    if (!S.waiting.some((w) => w.participant_id === info.participant_id)) S.waiting.push(info);
    renderPanel();
    showPopup(info);
    layout();
  }

  function onWaitingList(list) {
    S.waiting = list.filter((w) => w && w.participant_id);
    renderPanel();
    syncPopups(false);
    layout();
  }

  function syncPopups(showNew) {
    const ids = new Set(S.waiting.map((w) => w.participant_id));
    for (const el of [...$("popups").children]) {
      if (!ids.has(el.dataset.pid)) {
        el.remove();
        S.popupsShown.delete(el.dataset.pid);
      }
    }
    if (showNew) for (const w of S.waiting) showPopup(w);
    updateTitle();
  }

  function showPopup(info) {
    if (S.role !== "provider") return;
    const pid = info.participant_id;
    if ($("popups").querySelector(`[data-pid="${CSS.escape(pid)}"]`)) return;
    const name = info.name || "Someone";
    const el = document.createElement("div");
    el.className = "popup";
    el.dataset.pid = pid;
    el.setAttribute("role", "group");
    el.setAttribute("aria-label", `${name} is waiting to join`);
    const av = document.createElement("div");
    av.className = "popup-avatar";
    av.setAttribute("aria-hidden", "true");
    av.textContent = initials(name);
    const text = document.createElement("div");
    text.className = "popup-text";
    const strong = document.createElement("strong");
    strong.textContent = name;
    const span = document.createElement("span");
    span.textContent = "is waiting to join";
    text.append(strong, span);
    const actions = document.createElement("div");
    actions.className = "popup-actions";
    const deny = button("Deny", "btn btn-small btn-quiet popup-deny", () => denyWaiting(pid));
    deny.setAttribute("aria-label", `Deny ${name}`);
    const admit = button("Admit", "btn btn-small btn-primary popup-admit", () => admitWaiting(pid));
    admit.setAttribute("aria-label", `Admit ${name}`);
    actions.append(deny, admit);
    el.append(av, text, actions);
    $("popups").appendChild(el);
    S.popupsShown.add(pid);
    if (S.popupsShown.size) chime();
    announce(`${name} is waiting to join`, true);
    updateTitle();
  }

  function button(label, cls, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  function admitWaiting(pid) {
    send({ type: "admit", participant_id: pid });
    dropWaiting(pid);
  }

  function denyWaiting(pid) {
    send({ type: "deny", participant_id: pid });
    dropWaiting(pid);
  }

  function dropWaiting(pid) {
    S.waiting = S.waiting.filter((w) => w.participant_id !== pid);
    const popup = $("popups").querySelector(`[data-pid="${CSS.escape(pid)}"]`);
    if (popup) popup.remove();
    S.popupsShown.delete(pid);
    renderPanel();
    updateTitle();
    layout();
  }

  function updateTitle() {
    if (S.screen !== "call") return;
    const n = S.role === "provider" ? S.waiting.length : 0;
    document.title = n ? `(${n}) waiting · Video session` : "Video session";
  }

  function renderPanel() {
    const provider = S.role === "provider";
    const badge = $("people-badge");
    const waitingCount = provider ? S.waiting.length : 0;
    badge.hidden = waitingCount === 0;
    badge.textContent = String(waitingCount);
    $("ctl-people").setAttribute("aria-label", waitingCount
      ? `Participants, ${waitingCount} waiting` : "Participants");

    $("waiting-section").hidden = !provider || S.waiting.length === 0;
    $("waiting-heading").textContent = `Waiting room (${S.waiting.length})`;
    $("admit-all").hidden = S.waiting.length < 2;
    const wl = $("waiting-list");
    wl.replaceChildren();
    if (provider) {
      for (const w of S.waiting) {
        const name = w.name || "Someone";
        const li = personRow(name, `Waiting ${minutesSince(w.since)}`.trim(), w.participant_id);
        const actions = li.querySelector(".person-actions");
        const deny = button("Deny", "btn btn-small btn-quiet", () => denyWaiting(w.participant_id));
        deny.setAttribute("aria-label", `Deny ${name}`);
        const admit = button("Admit", "btn btn-small btn-primary", () => admitWaiting(w.participant_id));
        admit.setAttribute("aria-label", `Admit ${name}`);
        actions.append(deny, admit);
        wl.appendChild(li);
      }
    }

    const il = $("in-list");
    il.replaceChildren();
    const meName = S.claims.name || "You";
    il.appendChild(personRow(`${meName} (you)`, S.role === "provider" ? "Provider" : "", "self"));
    for (const p of S.participants.values()) {
      const name = displayName(p);
      const sub = [p.role === "provider" ? "Provider" : "", p.audioMuted ? "Muted" : "", p.reconnecting ? "Reconnecting" : ""]
        .filter(Boolean).join(" · ");
      const li = personRow(name, sub, p.participant_id);
      if (provider && p.role !== "provider") {
        const actions = li.querySelector(".person-actions");
        if (!p.audioMuted) { // a provider can mute someone, never unmute them
          const mute = button("Mute", "btn btn-small btn-quiet", () => {
            send({ type: "mute_participant", participant_id: p.participant_id, kind: "audio", muted: true });
          });
          mute.setAttribute("aria-label", `Mute ${name}`);
          actions.append(mute);
        }
        const remove = button("Remove", "btn btn-small btn-danger-quiet", () => confirmRemove(p.participant_id));
        remove.setAttribute("aria-label", `Remove ${name}`);
        actions.append(remove);
      }
      il.appendChild(li);
    }
    $("in-heading").textContent = `In this session (${S.participants.size + 1})`;
  }

  function personRow(name, sub, pid) {
    const li = document.createElement("li");
    li.className = "person";
    li.dataset.pid = pid;
    const av = document.createElement("div");
    av.className = "person-avatar";
    av.setAttribute("aria-hidden", "true");
    av.textContent = initials(name);
    const text = document.createElement("div");
    text.className = "person-text";
    const n = document.createElement("span");
    n.className = "person-name";
    n.textContent = name;
    text.appendChild(n);
    if (sub) {
      const s = document.createElement("span");
      s.className = "person-sub";
      s.textContent = sub;
      text.appendChild(s);
    }
    const actions = document.createElement("div");
    actions.className = "person-actions";
    li.append(av, text, actions);
    return li;
  }

  function confirmRemove(pid) {
    const p = S.participants.get(pid);
    const name = displayName(p);
    const dlg = $("confirm");
    $("confirm-title").textContent = `Remove ${name}?`;
    $("confirm-body").textContent = `${name} will leave the session and can't come back in unless you admit them again.`;
    $("confirm-ok").textContent = "Remove";
    dlg.returnValue = "";
    dlg.onclose = () => {
      if (dlg.returnValue === "ok") send({ type: "remove", participant_id: pid });
    };
    dlg.showModal();
  }

  function togglePanel(open) {
    const panel = $("panel");
    const next = open === undefined ? panel.hidden : open;
    panel.hidden = !next;
    $("ctl-people").setAttribute("aria-expanded", String(next));
    document.body.classList.toggle("panel-open", next);
    if (next) {
      renderPanel();
      $("panel-close").focus();
    }
    layout();
  }

  // A soft two-note chime when someone arrives in the waiting room (providers may be in another tab).
  function chime() {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    try {
      const ctx = new AC();
      const now = ctx.currentTime;
      [660, 880].forEach((f, i) => {
        const o = ctx.createOscillator();
        const g = ctx.createGain();
        o.frequency.value = f;
        g.gain.setValueAtTime(0.0001, now + i * 0.18);
        g.gain.exponentialRampToValueAtTime(0.08, now + i * 0.18 + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.4);
        o.connect(g).connect(ctx.destination);
        o.start(now + i * 0.18);
        o.stop(now + i * 0.18 + 0.45);
      });
      setTimeout(() => ctx.close().catch(() => {}), 1200);
    } catch (_) { /* no sound is fine */ }
  }

  // -- toasts and the timer -----------------------------------------------------------------------

  function toast(text, ms = 3500) {
    const el = document.createElement("div");
    el.className = "toast";
    el.textContent = text;
    $("toasts").appendChild(el);
    setTimeout(() => el.classList.add("leaving"), ms);
    setTimeout(() => el.remove(), ms + 400);
    while ($("toasts").children.length > 3) $("toasts").firstElementChild.remove();
  }

  let timerId = 0;
  function startTimer() {
    clearInterval(timerId);
    const tick = () => {
      const s = Math.max(0, Math.floor((Date.now() - S.joinedAt) / 1000));
      const h = Math.floor(s / 3600);
      const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
      const ss = String(s % 60).padStart(2, "0");
      $("call-timer").textContent = h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
      if (S.role === "provider" && s % 30 === 0) renderWaitingTimes();
    };
    tick();
    timerId = setInterval(tick, 1000);
  }

  function renderWaitingTimes() {
    if (!$("panel").hidden) renderPanel();
  }

  // -- ending, leaving, retrying ------------------------------------------------------------------

  function closePc(which) {
    const pc = S[which];
    if (!pc) return;
    try { pc.close(); } catch (_) { /* already closed */ }
    S[which] = null;
    if (which === "pub") {
      S.audioTx = null;
      S.videoTx = null;
    }
  }

  function closePeerConnections() {
    closePc("pub");
    closePc("sub");
    S.subChain = Promise.resolve();
    S.mids = new Map();
    reconcileRemote();
  }

  function clearRoom() {
    for (const pid of [...S.participants.keys()]) removeParticipant(pid);
    S.waiting = [];
    S.speakers = new Set();
    $("popups").replaceChildren();
    S.popupsShown.clear();
    togglePanel(false);
    const dlg = $("confirm");
    if (dlg.open) dlg.close();
  }

  // endings after which the room no longer holds this participant: the credential is dead
  const GONE = new Set(["left", "left_waiting", "removed", "replaced", "participant_denied", "room_closed",
    "resume_invalid", "token_used", "token_expired", "token_invalid"]);

  function endSession(code, serverMessage) {
    note(`end ${code}`);
    if (GONE.has(code)) dropResume();
    S.phase = "ended";
    S.gen++;
    clearInterval(S.pingTimer);
    clearTimeout(S.reconnect.timer);
    clearInterval(timerId);
    const ws = S.ws;
    S.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(CLOSE_NORMAL);
    closePeerConnections();
    clearRoom();
    $("reconnecting").hidden = true;
    stopLocalMedia(); // the camera light goes out
    showMessage(code, serverMessage);
  }

  function leave() {
    const fromWaiting = S.phase === "waiting";
    send({ type: "leave" });
    endSession(fromWaiting ? "left_waiting" : "left");
  }

  async function retryFromMessage() {
    S.everJoined = false;
    S.joinedAt = 0;
    S.me = "";
    $("connecting-title").textContent = "Connecting you to your session…";
    show("connecting");
    S.phase = "joining";
    if (!S.stream) {
      S.mediaReady = openLocalMedia().catch((e) => note(`local media failed: ${e && e.stack}`));
      await S.mediaReady;
    }
    if (S.phase === "joining") connect();
  }

  async function join() {
    $("join-btn").disabled = true;
    S.phase = "joining";
    $("connecting-title").textContent = "Connecting you to your session…";
    show("connecting");
    await S.mediaReady; // publish what the preview shows, never an empty offer by accident
    if (S.phase === "joining") connect();
  }

  // -- the test hook ------------------------------------------------------------------------------

  async function stats() {
    const out = { inbound: [], outbound: [] };
    for (const [name, pc] of [["publish", S.pub], ["subscribe", S.sub]]) {
      if (!pc) continue;
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === "inbound-rtp") {
          const info = s.mid != null ? S.mids.get(String(s.mid)) : undefined;
          out.inbound.push({
            pc: name, kind: s.kind, mid: s.mid ?? null, participant_id: info ? info.participant_id : undefined,
            framesDecoded: s.framesDecoded ?? 0, packetsReceived: s.packetsReceived ?? 0,
            bytesReceived: s.bytesReceived ?? 0, packetsLost: s.packetsLost ?? 0,
            frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0,
            keyFramesDecoded: s.keyFramesDecoded ?? 0, framesDropped: s.framesDropped ?? 0,
            pliCount: s.pliCount ?? 0, nackCount: s.nackCount ?? 0, ssrc: s.ssrc,
          });
        } else if (s.type === "outbound-rtp") {
          out.outbound.push({
            pc: name, kind: s.kind, mid: s.mid ?? null, packetsSent: s.packetsSent ?? 0,
            bytesSent: s.bytesSent ?? 0, framesEncoded: s.framesEncoded ?? 0,
            keyFramesEncoded: s.keyFramesEncoded ?? 0, pliCount: s.pliCount ?? 0, ssrc: s.ssrc,
          });
        }
      });
    }
    return out;
  }

  window.telesfu = {
    get state() {
      return {
        screen: S.screen,
        phase: S.phase,
        code: S.endCode,
        participant_id: S.me,
        role: S.role || S.claims.role || "",
        participants: [...S.participants.values()].map((p) => ({
          participant_id: p.participant_id, name: p.name, role: p.role, audioMuted: p.audioMuted,
          videoMuted: p.videoMuted, quality: p.quality || "", video: Boolean(S.remote.get(p.participant_id)?.video),
        })),
        waiting: S.waiting.map((w) => w.participant_id),
        micMuted: S.micMuted,
        camOff: S.camOff,
        reconnecting: S.phase === "reconnecting",
        publish: S.pub ? S.pub.connectionState : "none",
        subscribe: S.sub ? S.sub.connectionState : "none",
      };
    },
    stats,
    events: () => S.log.slice(),
    failedOffer: () => S.failedOffer || "",
  };

  // -- start --------------------------------------------------------------------------------------

  function readToken() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    let token = params.get("token") || "";
    if (token) {
      try {
        sessionStorage.setItem(TOKEN_KEY, token);
        sessionStorage.removeItem(RESUME_KEY); // a fresh link from the portal: a fresh join
      } catch (_) { /* private mode */ }
      // keep the token out of the address bar, bookmarks and screen shares
      history.replaceState(null, "", location.pathname + location.search);
    } else {
      try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { token = ""; }
    }
    return token;
  }

  function wire() {
    $("join-btn").addEventListener("click", join);
    for (const id of ["pre-mic", "wait-mic"]) $(id).addEventListener("click", () => setMicMuted(!S.micMuted, { announceIt: true }));
    for (const id of ["pre-cam", "wait-cam"]) $(id).addEventListener("click", () => setCamOff(!S.camOff));
    $("ctl-mic").addEventListener("click", () => setMicMuted(!S.micMuted, { announceIt: true }));
    $("ctl-cam").addEventListener("click", () => setCamOff(!S.camOff));
    $("ctl-leave").addEventListener("click", leave);
    $("ctl-end").addEventListener("click", () => {
      if (window.confirm("End this session for everyone?")) send({ type: "end_session" });
    });
    $("wait-leave").addEventListener("click", leave);
    $("ctl-people").addEventListener("click", () => togglePanel());
    $("panel-close").addEventListener("click", () => {
      togglePanel(false);
      $("ctl-people").focus();
    });
    $("admit-all").addEventListener("click", () => {
      send({ type: "admit_all" });
      for (const w of [...S.waiting]) dropWaiting(w.participant_id);
    });
    $("sound-btn").addEventListener("click", () => {
      for (const el of document.querySelectorAll("#audio-sinks audio")) el.play().catch(() => {});
      $("sound-btn").hidden = true;
    });
    for (const kind of ["videoinput", "audioinput", "audiooutput"]) {
      $(`pick-${kind}`).addEventListener("change", (ev) => switchDevice(kind, ev.target.value));
    }
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && !$("panel").hidden) togglePanel(false);
    });
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
      navigator.mediaDevices.addEventListener("devicechange", () => fillDevicePickers());
    }
    window.addEventListener("resize", () => layout());
    if (window.ResizeObserver) new ResizeObserver(() => layout()).observe($("stage"));
    window.addEventListener("online", () => {
      if (S.phase === "reconnecting") {
        clearTimeout(S.reconnect.timer);
        connect();
      }
    });
    window.addEventListener("hashchange", () => {
      // the join link opened again in this tab (same document): start over with its token
      if (new URLSearchParams(location.hash.replace(/^#/, "")).get("token")) {
        readToken();
        location.reload();
      }
    });
    // No leave on pagehide: a reload cannot be told from a closed tab, and a reload within the
    // grace resumes (the credential is in sessionStorage); a closed tab leaves when the grace ends.
  }

  async function start() {
    wire();
    S.token = readToken();
    try { S.resume = sessionStorage.getItem(RESUME_KEY) || ""; } catch (_) { S.resume = ""; }
    S.claims = S.token ? decodeClaims(S.token) : {};
    if (!S.token) {
      showMessage("no_token");
      return;
    }
    if (!window.RTCPeerConnection || !navigator.mediaDevices || !window.WebSocket) {
      showMessage("unsupported");
      return;
    }
    const name = typeof S.claims.name === "string" ? S.claims.name : "";
    if (S.claims.role === "provider") {
      $("prejoin-who").textContent = name
        ? `Joining as ${name}. You'll admit clients from the waiting room once you're in.`
        : "You'll admit clients from the waiting room once you're in.";
    } else if (name) {
      $("prejoin-who").textContent = `Joining as ${name}. Check your camera and microphone, then join when you're ready.`;
    }
    show("prejoin");
    S.mediaReady = openLocalMedia().catch((e) => note(`local media failed: ${e && e.stack}`));
    await S.mediaReady;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
