// koel web page: speak text through /v1/audio/captioned_speech, play MP3 as it streams (Media Source
// Extensions), highlight each word from the timestamps, and offer the whole file for download.
"use strict";

// Decoders play the MP3 encoder's priming samples (1105 at 24 kHz) before the speech.
const MP3_DELAY_S = 1105 / 24000;

const $ = (id) => document.getElementById(id);
const el = {
  text: $("text"), count: $("count"), voice: $("voice"), voice2: $("voice2"), mix: $("mix"),
  mixOut: $("mix-out"), lang: $("lang"), speed: $("speed"), speedOut: $("speed-out"),
  speak: $("speak"), stop: $("stop"), download: $("download"), apiKey: $("api-key"),
  player: $("player"), status: $("status"), transcript: $("transcript"),
};

// Progress of the current request, also read by the browser test.
const state = { bytes: 0, lines: 0, words: [], done: false, error: null, played: false };
window.koelState = state;

let controller = null;
let spokenText = "";
let current = -1;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = el.apiKey.value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, isError = false) {
  el.status.textContent = text;
  el.status.classList.toggle("error", isError);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (_) {
    return response.statusText || "HTTP " + response.status;
  }
}

async function loadVoices() {
  for (const select of [el.voice, el.voice2]) {
    select.querySelectorAll("optgroup").forEach((group) => group.remove());
  }
  const response = await fetch("/v1/audio/voices", { headers: headers() });
  if (!response.ok) {
    setStatus("Could not list voices: " + (await errorMessage(response)), true);
    if (response.status === 401) $("key-box").open = true;
    return;
  }
  const { voices } = await response.json();
  const groups = new Map();
  for (const v of voices) {
    const group = v.language_name || "Other";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(v);
  }
  for (const select of [el.voice, el.voice2]) {
    for (const [group, list] of groups) {
      const optgroup = document.createElement("optgroup");
      optgroup.label = group;
      for (const v of list) {
        const option = new Option(v.gender ? `${v.name} (${v.gender})` : v.name, v.id);
        optgroup.appendChild(option);
      }
      select.appendChild(optgroup);
    }
  }
  const preferred = voices.find((v) => v.id === "af_heart") || voices[0];
  if (preferred) el.voice.value = preferred.id;
}

function voiceSpec() {
  const first = el.voice.value;
  const second = el.voice2.value;
  if (!second || second === first) return first;
  const share = Number(el.mix.value) / 100;
  return `${first}:${(1 - share).toFixed(2)}+${second}:${share.toFixed(2)}`;
}

function base64Bytes(b64) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

// -- transcript and highlighting ------------------------------------------------------------------

function renderTranscript() {
  const text = spokenText;
  const box = el.transcript;
  box.textContent = "";
  let cursor = 0;
  state.words.forEach((w, i) => {
    const hasSpan = w.char_start >= cursor && w.char_end > w.char_start && w.char_end <= text.length;
    if (hasSpan && w.char_start > cursor) box.append(text.slice(cursor, w.char_start));
    else if (!hasSpan && i > 0) box.append(" ");
    const span = document.createElement("span");
    span.className = "word";
    span.dataset.index = String(i);
    span.textContent = hasSpan ? text.slice(w.char_start, w.char_end) : w.word;
    box.append(span);
    if (hasSpan) cursor = w.char_end;
  });
  if (cursor < text.length && state.words.length && state.words[state.words.length - 1].char_end >= 0) {
    const rest = document.createElement("span");
    rest.className = "pending";
    rest.textContent = text.slice(cursor);
    box.append(rest);
  }
  current = -1;
}

function highlight() {
  const t = el.player.currentTime - MP3_DELAY_S;
  let found = -1;
  for (let i = 0; i < state.words.length; i++) {
    const w = state.words[i];
    if (w.start_time <= t && t < Math.max(w.end_time, w.start_time + 0.05)) { found = i; break; }
  }
  if (found === current) return;
  const old = el.transcript.querySelector(".word.now");
  if (old) old.classList.remove("now");
  if (found >= 0) {
    const span = el.transcript.querySelector(`.word[data-index="${found}"]`);
    if (span) {
      span.classList.add("now");
      state.highlighted = (state.highlighted || 0) + 1;
    }
  }
  current = found;
}

function tick() {
  highlight();
  if (!el.player.paused) requestAnimationFrame(tick);
}

el.player.addEventListener("play", () => { state.played = true; requestAnimationFrame(tick); });
el.player.addEventListener("seeked", highlight);
el.transcript.addEventListener("click", (event) => {
  const span = event.target.closest(".word");
  if (!span) return;
  const w = state.words[Number(span.dataset.index)];
  el.player.currentTime = w.start_time + MP3_DELAY_S;
  el.player.play().catch(() => {});
});

// -- streaming playback ---------------------------------------------------------------------------

class Appender {
  // Feeds MP3 bytes to a SourceBuffer one append at a time (appendBuffer is asynchronous).
  constructor(sourceBuffer) {
    this.sb = sourceBuffer;
    this.queue = [];
    this.idle = Promise.resolve();
    this.wake = null;
    sourceBuffer.addEventListener("updateend", () => this.next());
  }
  push(bytes) { this.queue.push(bytes); if (!this.sb.updating) this.next(); }
  next() {
    if (this.sb.updating) return;
    if (this.queue.length) this.sb.appendBuffer(this.queue.shift());
    else if (this.wake) { this.wake(); this.wake = null; }
  }
  drained() {
    if (!this.queue.length && !this.sb.updating) return Promise.resolve();
    return new Promise((resolve) => { this.wake = resolve; });
  }
}

async function openMediaSource() {
  if (!window.MediaSource || !MediaSource.isTypeSupported("audio/mpeg")) return null;
  const mediaSource = new MediaSource();
  el.player.src = URL.createObjectURL(mediaSource);
  await new Promise((resolve) => mediaSource.addEventListener("sourceopen", resolve, { once: true }));
  const sb = mediaSource.addSourceBuffer("audio/mpeg");
  sb.mode = "sequence";
  return { mediaSource, appender: new Appender(sb) };
}

async function speak() {
  const text = el.text.value;
  if (!text.trim()) { setStatus("Type something to speak.", true); return; }
  stop();
  localStorage.setItem("koel-api-key", el.apiKey.value.trim());
  Object.assign(state, { bytes: 0, lines: 0, words: [], done: false, error: null, played: false, highlighted: 0 });
  spokenText = text;
  renderTranscript();
  el.download.hidden = true;
  el.speak.disabled = true;
  el.stop.disabled = false;
  setStatus("Synthesising…");
  controller = new AbortController();
  const parts = [];
  const started = performance.now();
  try {
    const body = {
      model: "kokoro", input: text, voice: voiceSpec(), speed: Number(el.speed.value),
      response_format: "mp3", stream: true, return_timestamps: true,
    };
    if (el.lang.value) body.lang = el.lang.value;
    const response = await fetch("/v1/audio/captioned_speech", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const media = await openMediaSource();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (value) pending += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline).trim();
        pending = pending.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(line);
        const bytes = base64Bytes(message.audio);
        state.lines += 1;
        if (bytes.length) {
          parts.push(bytes);
          state.bytes += bytes.length;
          if (media) {
            media.appender.push(bytes);
            if (el.player.paused && !state.played) {
              el.player.play().catch(() => setStatus("Press play to listen."));
              setStatus(`Playing (first audio after ${Math.round(performance.now() - started)} ms)…`);
            }
          }
        }
        if (message.timestamps && message.timestamps.length) {
          state.words.push(...message.timestamps);
          renderTranscript();
        }
      }
      if (done) break;
    }
    const blob = new Blob(parts, { type: "audio/mpeg" });
    if (media) {
      await media.appender.drained();
      if (media.mediaSource.readyState === "open") media.mediaSource.endOfStream();
    } else {
      el.player.src = URL.createObjectURL(blob);
      el.player.play().catch(() => setStatus("Press play to listen."));
    }
    el.download.href = URL.createObjectURL(blob);
    el.download.hidden = false;
    state.done = true;
    setStatus(`Done: ${state.words.length} words, ${(state.bytes / 1024).toFixed(0)} KiB of MP3.`);
  } catch (err) {
    if (err.name !== "AbortError") {
      state.error = String(err.message || err);
      setStatus("Error: " + state.error, true);
    }
  } finally {
    el.speak.disabled = false;
    el.stop.disabled = true;
    controller = null;
  }
}

function stop() {
  if (controller) controller.abort();
  el.player.pause();
}

el.text.addEventListener("input", () => { el.count.textContent = String(el.text.value.length); });
el.mix.addEventListener("input", () => { el.mixOut.textContent = el.mix.value + "%"; });
el.speed.addEventListener("input", () => { el.speedOut.textContent = Number(el.speed.value).toFixed(2) + "×"; });
el.speak.addEventListener("click", speak);
el.stop.addEventListener("click", () => { stop(); setStatus("Stopped."); });
el.apiKey.addEventListener("change", () => {
  localStorage.setItem("koel-api-key", el.apiKey.value.trim());
  setStatus("");
  loadVoices().catch((err) => setStatus("Could not list voices: " + err, true));
});
el.count.textContent = String(el.text.value.length);
el.apiKey.value = localStorage.getItem("koel-api-key") || "";
loadVoices().catch((err) => setStatus("Could not list voices: " + err, true));
