// dataplane: the byte-transparent switch (tcp/unix client <-> unix service) outside the
// JavaScript event loop (docs/architecture.md "Native data plane"). One epoll thread,
// edge-triggered, moves bytes with read/write through one shared 64 KiB buffer; only the
// unwritten rest of a partial write is copied aside (per side, freed once written), and
// the source is not read while that rest waits (backpressure both ways). Frame boundaries
// are followed as bytes pass (payload limit, message counts, truncation at EOF).
//
// JS keeps every policy (accept, handshakes, limits, logging, drain). It hands over two
// connected descriptors (dup'ed here: the JS sockets are then destroyed without a FIN),
// reads counts at any time, asks for a close, and hears of every end through one
// threadsafe function.
//
// Threads: the JS thread only queues commands (add, close) and reads counters under
// `mu`. The epoll thread owns every Conn; it inserts and erases them in `conns` under
// `mu`, so a JS read never sees a freed Conn. Each descriptor is closed exactly once,
// by the epoll thread (CloseSide).
#include <napi.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace dataplane {
namespace {

// One read moves up to kReadBuffer bytes while the other side takes whole writes (fewer
// epoll turns and syscalls per byte when streaming), and kCongestedRead once a write to it
// came back short, until a write to it is whole again. The rest of a short write waits in
// memory, and nothing more is read for that side meanwhile: a blocked direction holds at
// most one read's rest (up to 256 KiB; 64 KiB with 64 KiB reads throughout).
constexpr size_t kReadBuffer = 256 * 1024;
constexpr size_t kCongestedRead = 64 * 1024;
constexpr int64_t kFinishGraceMs = 5000;  // src/switch.ts FINISH_GRACE_MS
constexpr int kClient = 0;
constexpr int kService = 1;

// How a connection ended, as reported to JS (src/dataplane.ts decodes it).
enum Kind : int {
  kClosed = 0,        // clean end (EOF both ways, or the half-close timeout)
  kTooLarge = 1,      // a header announced more than maxPayload (detail: the length)
  kTruncated = 2,     // EOF inside a frame (detail: missing payload bytes, or header bytes had)
  kErrno = 3,         // a syscall failed (detail: errno; syscall named)
  kJsClose = 4,       // closed on request from JS (JS reported it already)
};

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Follows frame boundaries of a stream forwarded unchanged (src/frame.ts FrameTracker).
struct Tracker {
  uint32_t headerHave = 0;
  uint64_t headerValue = 0;
  uint64_t payloadLeft = 0;
  // Returns the number of bytes that may pass: n, or the offset of a bad header
  // (then *badLength is its length). Counts complete frames in *frames.
  size_t Track(const unsigned char* p, size_t n, uint64_t maxPayload, std::atomic<uint64_t>* frames,
               uint64_t* badLength, bool* bad) {
    size_t pos = 0;
    uint64_t done = 0;
    *bad = false;
    while (pos < n) {
      if (payloadLeft > 0) {
        uint64_t step = payloadLeft < n - pos ? payloadLeft : n - pos;
        payloadLeft -= step;
        pos += size_t(step);
        if (payloadLeft == 0) done++;
        continue;
      }
      size_t headerStart = pos >= headerHave ? pos - headerHave : 0;
      while (headerHave < 4 && pos < n) {
        headerValue = (headerValue << 8) | p[pos++];  // unsigned: 2^31+ stays large
        headerHave++;
      }
      if (headerHave < 4) break;
      uint64_t length = headerValue;
      headerHave = 0;
      headerValue = 0;
      if (length > maxPayload) {
        *bad = true;
        *badLength = length;
        frames->fetch_add(done, std::memory_order_relaxed);
        return headerStart;
      }
      if (length == 0) done++;
      else payloadLeft = length;
    }
    frames->fetch_add(done, std::memory_order_relaxed);
    return n;
  }
  bool AtBoundary() const { return headerHave == 0 && payloadLeft == 0; }
};

struct Side {
  int fd = -1;
  bool canRead = false;   // edge seen, not yet read to EAGAIN
  bool canWrite = false;  // edge seen, not yet written to EAGAIN
  bool hangup = false;      // EPOLLRDHUP/HUP/ERR seen: read until 0 or an error, never stop short
  bool inputEnded = false;  // EOF read
  bool outputShut = false;  // shutdown(SHUT_WR) done
  bool congested = false;   // a write to this side came back short: reads for it stay small
  // The unwritten rest of what is sent to this side (malloc'ed; null when none).
  char* pend = nullptr;
  size_t pendOff = 0, pendLen = 0;
  Tracker tracker;  // of what this side sends us
  std::atomic<uint64_t> bytesIn{0}, bytesOut{0}, framesIn{0};
};

struct Conn {
  uint64_t id = 0;
  uint64_t maxPayload = 0;
  int64_t halfCloseMs = 0;
  Side side[2];
  int firstEnd = -1;  // side whose input ended first
  bool reported = false;
  // Finishing: torn down; only the named side's rest is flushed, then it is closed.
  bool finishing = false;
  int64_t deadline = 0;  // 0: none (half-close timeout, or the finish grace)
  std::multimap<int64_t, uint64_t>::iterator timer;
  bool hasTimer = false;
  uint64_t turn = 0;  // the loop turn that last pumped it
};

// What the epoll thread tells JS (one per connection, freed by the JS-side callback).
struct Report {
  uint64_t id;
  int kind;
  int endedBy;
  int64_t detail;
  const char* syscall;
  double counts[6];  // client in/out/frames, service in/out/frames
};

void CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t*, Report* r);
using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, Report, CallJs>;

struct Command {
  enum { kAdd, kClose } type;
  Conn* conn;  // kAdd
  uint64_t id;  // kClose
  // kAdd: initial bytes: "ok" for the client (untracked), then what JS had already read.
  std::string okBytes, clientData, serviceData;
};

struct Plane {
  std::mutex mu;  // guards conns (insert/erase by the thread, lookups by JS) and commands
  std::unordered_map<uint64_t, Conn*> conns;
  std::vector<Command*> commands;
  int epfd = -1;
  int wakefd = -1;
  std::atomic<bool> stopping{false};
  pthread_t thread;
  bool threadStarted = false;
  Tsfn tsfn;
  napi_env env = nullptr;
  uint64_t nextId = 1;
  int live = 0;  // JS thread only: added and not yet reported (keeps the loop alive)
  std::multimap<int64_t, uint64_t> timers;  // epoll thread only
  unsigned char* buf = nullptr;             // epoll thread only
  size_t freedSinceTrim = 0;                // epoll thread only: rest buffers freed
};

Plane* plane = nullptr;  // heap, never freed: no static destructor races a late thread

// ---- epoll thread ----------------------------------------------------------------

void SetTimer(Conn* c, int64_t at) {
  if (c->hasTimer) plane->timers.erase(c->timer);
  c->hasTimer = at > 0;
  c->deadline = at;
  if (at > 0) c->timer = plane->timers.emplace(at, c->id);
}

void CloseSide(Side& s) {
  if (s.fd < 0) return;
  // Out of the epoll set first: were the JS copy still open, the registration would
  // outlive our descriptor (epoll keys on the open file description).
  epoll_ctl(plane->epfd, EPOLL_CTL_DEL, s.fd, nullptr);
  close(s.fd);  // Linux releases the number even on EINTR: never retried
  s.fd = -1;
  if (s.pend != nullptr) plane->freedSinceTrim += s.pendOff + s.pendLen + 1;
  free(s.pend);
  s.pend = nullptr;
  s.pendLen = s.pendOff = 0;
}

void Free(Conn* c) {
  SetTimer(c, 0);
  CloseSide(c->side[0]);
  CloseSide(c->side[1]);
  {
    std::lock_guard<std::mutex> lock(plane->mu);
    plane->conns.erase(c->id);
  }
  delete c;
}

void SendReport(Conn* c, int kind, int endedBy, int64_t detail, const char* syscall) {
  if (c->reported) return;
  c->reported = true;
  Report* r = new Report{c->id, kind, endedBy, detail, syscall, {}};
  for (int i = 0; i < 2; i++) {
    r->counts[i * 3 + 0] = double(c->side[i].bytesIn.load(std::memory_order_relaxed));
    r->counts[i * 3 + 1] = double(c->side[i].bytesOut.load(std::memory_order_relaxed));
    r->counts[i * 3 + 2] = double(c->side[i].framesIn.load(std::memory_order_relaxed));
  }
  if (plane->tsfn.NonBlockingCall(r) != napi_ok) delete r;  // closing: nobody to tell
}

// Ends the switch because of side `by` (src/switch.ts teardown): `by` is closed now, the
// other side once what was already accepted for it is written (then FIN), within
// kFinishGraceMs. Reported once.
void Teardown(Conn* c, int by, int kind, int64_t detail = 0, const char* syscall = nullptr) {
  SendReport(c, kind, by, detail, syscall);
  if (c->finishing) return;
  c->finishing = true;
  CloseSide(c->side[by]);
  Side& other = c->side[1 - by];
  if (other.fd >= 0 && other.pendLen > 0) {
    SetTimer(c, NowMs() + kFinishGraceMs);  // flushed by Pump, cut at the deadline
    return;
  }
  if (other.fd >= 0 && !other.outputShut) shutdown(other.fd, SHUT_WR);
  Free(c);
}

// Writes this side's rest. Returns false when the connection is gone.
bool Flush(Conn* c, int i) {
  Side& s = c->side[i];
  while (s.pendLen > 0 && s.canWrite) {
    ssize_t n = send(s.fd, s.pend + s.pendOff, s.pendLen, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s.canWrite = false;
        return true;
      }
      if (c->finishing) {
        Free(c);
        return false;
      }
      Teardown(c, i, kErrno, errno, "write");
      return false;
    }
    s.bytesOut.fetch_add(uint64_t(n), std::memory_order_relaxed);
    s.pendOff += size_t(n);
    s.pendLen -= size_t(n);
  }
  if (s.pendLen == 0 && s.pend != nullptr) {
    plane->freedSinceTrim += s.pendOff + 1;
    free(s.pend);
    s.pend = nullptr;
    s.pendOff = 0;
  }
  if (c->finishing && s.pendLen == 0) {
    if (!s.outputShut) shutdown(s.fd, SHUT_WR);
    Free(c);
    return false;
  }
  return true;
}

// Queues `n` bytes for side `to` after what it already has (copy), no write.
bool Queue(Side& to, const char* p, size_t n) {
  if (n == 0) return true;
  if (to.pendLen > 0 && to.pendOff > 0) {
    memmove(to.pend, to.pend + to.pendOff, to.pendLen);
    to.pendOff = 0;
  }
  char* grown = static_cast<char*>(realloc(to.pend, to.pendLen + n));
  if (grown == nullptr) return false;
  to.pend = grown;
  memcpy(to.pend + to.pendLen, p, n);
  to.pendLen += n;
  return true;
}

// Bytes `p[0..n)` came from side `from`: track frames, then send to the other side,
// writing at once when it has nothing queued and keeping the rest aside. Returns false
// when the connection is gone.
bool Deliver(Conn* c, int from, const char* p, size_t n) {
  Side& src = c->side[from];
  Side& dst = c->side[1 - from];
  src.bytesIn.fetch_add(n, std::memory_order_relaxed);
  bool bad = false;
  uint64_t badLength = 0;
  size_t pass = src.tracker.Track(reinterpret_cast<const unsigned char*>(p), n, c->maxPayload,
                                  &src.framesIn, &badLength, &bad);
  size_t off = 0;
  while (dst.pendLen == 0 && off < pass) {
    ssize_t w = send(dst.fd, p + off, pass - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        dst.canWrite = false;
        break;
      }
      Teardown(c, 1 - from, kErrno, errno, "write");
      return false;
    }
    dst.bytesOut.fetch_add(uint64_t(w), std::memory_order_relaxed);
    off += size_t(w);
  }
  // A whole write means the other side keeps up: big reads for it again.
  dst.congested = off < pass;
  if (off < pass && !Queue(dst, p + off, pass - off)) {
    Teardown(c, from, kErrno, ENOMEM, "malloc");
    return false;
  }
  if (bad) {
    // Complete frames before the bad header pass (queued above), then both close.
    Teardown(c, from, kTooLarge, int64_t(badLength));
    return false;
  }
  return true;
}

// Side `from` reached EOF at a frame boundary: FIN to the other side (its queue is empty:
// we only read while it is), and the half-close timeout for the other direction.
bool InputEnded(Conn* c, int from) {
  Side& src = c->side[from];
  Side& dst = c->side[1 - from];
  src.inputEnded = true;
  src.canRead = false;
  if (!src.tracker.AtBoundary()) {
    const Tracker& t = src.tracker;
    int64_t detail = t.payloadLeft > 0 ? int64_t(t.payloadLeft) : -int64_t(t.headerHave);
    Teardown(c, from, kTruncated, detail);
    return false;
  }
  if (c->firstEnd < 0) c->firstEnd = from;
  if (!dst.outputShut) {
    dst.outputShut = true;
    if (shutdown(dst.fd, SHUT_WR) < 0 && errno != ENOTCONN) {
      Teardown(c, 1 - from, kErrno, errno, "shutdown");
      return false;
    }
  }
  if (dst.inputEnded) {
    // Both ways ended and everything was written: over.
    SendReport(c, kClosed, c->firstEnd, 0, nullptr);
    Free(c);
    return false;
  }
  if (!c->hasTimer) SetTimer(c, NowMs() + c->halfCloseMs);
  return true;
}

// Moves what can move until nothing can; false when the connection is gone.
bool Pump(Conn* c) {
  for (int rounds = 0; rounds < 64; rounds++) {  // bounded: one busy pair must not starve others
    bool progress = false;
    for (int from = 0; from < 2; from++) {
      int to = 1 - from;
      if (c->side[to].pendLen > 0 && c->side[to].canWrite) {
        size_t before = c->side[to].pendLen;
        if (!Flush(c, to)) return false;
        if (c->side[to].pendLen != before) progress = true;
      }
      if (c->finishing) continue;
      Side& src = c->side[from];
      if (!src.canRead || src.inputEnded || c->side[to].pendLen > 0) continue;
      size_t want = c->side[to].congested ? kCongestedRead : kReadBuffer;
      ssize_t n = read(src.fd, plane->buf, want);
      if (n < 0) {
        if (errno == EINTR) {
          progress = true;
          continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          src.canRead = false;
          continue;
        }
        Teardown(c, from, kErrno, errno, "read");
        return false;
      }
      progress = true;
      if (n == 0) {
        if (!InputEnded(c, from)) return false;
        continue;
      }
      if (!Deliver(c, from, reinterpret_cast<char*>(plane->buf), size_t(n))) return false;
      // A short read drained the socket (edge-triggered: no need to read to EAGAIN),
      // unless a FIN or an error is pending: that comes with no new edge.
      if (size_t(n) < want && !src.hangup) src.canRead = false;
    }
    if (!progress) return true;
  }
  // Still busy: come back after the other connections had their turn.
  return true;
}

void Add(Command* cmd, std::vector<uint64_t>& busy) {
  Conn* c = cmd->conn;
  {
    std::lock_guard<std::mutex> lock(plane->mu);
    plane->conns[c->id] = c;
  }
  for (int i = 0; i < 2; i++) {
    epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (c->id << 1) | uint64_t(i);
    if (epoll_ctl(plane->epfd, EPOLL_CTL_ADD, c->side[i].fd, &ev) < 0) {
      Teardown(c, i, kErrno, errno, "epoll_ctl");
      return;
    }
    c->side[i].canRead = c->side[i].canWrite = true;
  }
  // In order: the `ok`, then what each side sent before the hand-over.
  if (!Queue(c->side[kClient], cmd->okBytes.data(), cmd->okBytes.size())) {
    Teardown(c, kClient, kErrno, ENOMEM, "malloc");
    return;
  }
  if (!cmd->clientData.empty() && !Deliver(c, kClient, cmd->clientData.data(), cmd->clientData.size())) return;
  if (!cmd->serviceData.empty() && !Deliver(c, kService, cmd->serviceData.data(), cmd->serviceData.size())) return;
  busy.push_back(c->id);
}

Conn* Find(uint64_t id) {
  auto it = plane->conns.find(id);  // only this thread mutates conns: no lock to read
  return it == plane->conns.end() ? nullptr : it->second;
}

void RunCommands(std::vector<uint64_t>& busy) {
  std::vector<Command*> cmds;
  {
    std::lock_guard<std::mutex> lock(plane->mu);
    cmds.swap(plane->commands);
  }
  for (Command* cmd : cmds) {
    if (cmd->type == Command::kAdd) {
      Add(cmd, busy);
    } else if (Conn* c = Find(cmd->id)) {
      Teardown(c, kClient, kJsClose);
    }
    delete cmd;
  }
}

void* Loop(void*) {
  pthread_setname_np(pthread_self(), "ipc-dataplane");  // for top -H, perf, gdb
  plane->buf = static_cast<unsigned char*>(malloc(kReadBuffer));
  std::vector<epoll_event> events(256);
  std::vector<uint64_t> busy;   // ids to pump this turn
  std::vector<uint64_t> again;  // ids still busy after their bounded turn
  uint64_t turn = 0;
  while (!plane->stopping.load()) {
    int timeout = plane->freedSinceTrim > 0 ? 1000 : -1;
    if (!again.empty()) timeout = 0;
    else if (!plane->timers.empty()) {
      int64_t left = plane->timers.begin()->first - NowMs();
      int64_t cap = plane->freedSinceTrim > 0 ? 1000 : 60000;
      timeout = left <= 0 ? 0 : left > cap ? int(cap) : int(left);
    }
    int n = epoll_wait(plane->epfd, events.data(), int(events.size()), timeout);
    if (n < 0 && errno != EINTR) break;  // EBADF/EINVAL: the plane is unusable
    if (n == 0 && timeout > 0 && plane->freedSinceTrim > 0) {
      // Quiet after rest buffers came and went (a burst of slow readers): give the freed
      // pages back, so a burst does not stay in RSS.
      plane->freedSinceTrim = 0;
      malloc_trim(0);
    }
    busy.swap(again);
    again.clear();
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == 0) {  // the wake eventfd
        uint64_t count;
        while (read(plane->wakefd, &count, sizeof count) < 0 && errno == EINTR) {
        }
        continue;
      }
      Conn* c = Find(tag >> 1);
      if (c == nullptr) continue;  // already freed
      Side& s = c->side[tag & 1];
      uint32_t e = events[i].events;
      if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.canRead = true;
      if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.hangup = true;
      if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s.canWrite = true;
      busy.push_back(c->id);
    }
    RunCommands(busy);
    // By id, once per turn: a Conn may be named twice (both sides), or freed by an
    // earlier Pump or a command in this turn.
    turn++;
    for (uint64_t id : busy) {
      Conn* c = Find(id);
      if (c == nullptr || c->turn == turn) continue;
      c->turn = turn;
      if (!Pump(c)) continue;
      Side* s = c->side;
      bool more = (s[0].canRead && !s[0].inputEnded && s[1].pendLen == 0) ||
                  (s[1].canRead && !s[1].inputEnded && s[0].pendLen == 0) ||
                  (s[0].canWrite && s[0].pendLen > 0) || (s[1].canWrite && s[1].pendLen > 0);
      if (more && !c->finishing) again.push_back(id);
    }
    // Deadlines: the half-close timeout (a clean end by the side that ended first) and
    // the finish grace (the rest is dropped).
    int64_t now = NowMs();
    while (!plane->timers.empty() && plane->timers.begin()->first <= now) {
      uint64_t id = plane->timers.begin()->second;
      plane->timers.erase(plane->timers.begin());
      Conn* c = Find(id);
      if (c == nullptr) continue;
      c->hasTimer = false;
      if (c->finishing) Free(c);
      else Teardown(c, c->firstEnd < 0 ? kClient : c->firstEnd, kClosed);
    }
  }
  return nullptr;
}

// ---- JS thread -------------------------------------------------------------------

void CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t*, Report* r) {
  if (r == nullptr) return;
  if (env != nullptr && !fn.IsEmpty()) {
    if (--plane->live == 0) plane->tsfn.Unref(env);
    Napi::Array counts = Napi::Array::New(env, 6);
    for (uint32_t i = 0; i < 6; i++) counts.Set(i, Napi::Number::New(env, r->counts[i]));
    fn.Call({Napi::Number::New(env, double(r->id)), Napi::Number::New(env, r->kind),
             Napi::Number::New(env, r->endedBy), Napi::Number::New(env, double(r->detail)),
             r->syscall ? Napi::String::New(env, r->syscall) : env.Null(), counts});
  }
  delete r;
}

void Throw(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}

void Stop(void*) {
  if (plane == nullptr || !plane->threadStarted) return;
  plane->stopping.store(true);
  uint64_t one = 1;
  if (write(plane->wakefd, &one, sizeof one) < 0) {
  }
  pthread_join(plane->thread, nullptr);
  plane->threadStarted = false;
}

// start(onEnd): starts the epoll thread once; onEnd(id, kind, endedBy, detail, syscall,
// counts) is called for every connection, once.

Napi::Value Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (plane != nullptr) {
    if (plane->env != napi_env(env)) Napi::Error::New(env, "the data plane runs in another thread's environment").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!info[0].IsFunction()) {
    Napi::TypeError::New(env, "start(onEnd) takes a function").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Plane* p = new Plane();
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) {
    Throw(env, errno, "epoll_create1");
    delete p;
    return env.Undefined();
  }
  p->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (p->wakefd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wakefd, &ev) < 0) {
    Throw(env, errno, "eventfd");
    if (p->wakefd >= 0) close(p->wakefd);
    close(p->epfd);
    delete p;
    return env.Undefined();
  }
  p->env = env;
  // Unbounded queue (0): the epoll thread never blocks on JS. Unref'd until a connection lives.
  p->tsfn = Tsfn::New(env, info[0].As<Napi::Function>(), "libipc.dataplane", 0, 1);
  p->tsfn.Unref(env);
  plane = p;
  if (pthread_create(&p->thread, nullptr, Loop, nullptr) != 0) {
    Throw(env, EAGAIN, "pthread_create");
    return env.Undefined();
  }
  p->threadStarted = true;
  napi_add_env_cleanup_hook(env, Stop, nullptr);
  // process.exit() may skip the cleanup hooks: the thread must not run on into exit().
  atexit([] { Stop(nullptr); });
  return env.Undefined();
}

int DupFd(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

std::string Bytes(const Napi::Value& v) {
  if (!v.IsBuffer()) return std::string();
  Napi::Buffer<char> b = v.As<Napi::Buffer<char>>();
  return std::string(b.Data(), b.Length());
}

// add(clientFd, serviceFd, maxPayload, halfCloseMs, ok, clientData, serviceData) -> id.
// Both descriptors are dup'ed: the caller destroys its sockets afterwards (no FIN).
Napi::Value AddConn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (plane == nullptr || !plane->threadStarted) {
    Napi::Error::New(env, "the data plane is not started").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (size_t i = 0; i < 4; i++) {
    if (!info[i].IsNumber()) {
      Napi::TypeError::New(env, "argument " + std::to_string(i) + " must be a number").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  int64_t cfd = info[0].As<Napi::Number>().Int64Value();
  int64_t sfd = info[1].As<Napi::Number>().Int64Value();
  double maxPayload = info[2].As<Napi::Number>().DoubleValue();
  int64_t halfClose = info[3].As<Napi::Number>().Int64Value();
  if (cfd < 0 || sfd < 0 || cfd > INT32_MAX || sfd > INT32_MAX || !(maxPayload >= 0) || halfClose < 0) {
    Napi::RangeError::New(env, "bad descriptor, limit or timeout").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int c = DupFd(int(cfd));
  if (c < 0) {
    Throw(env, errno, "dup");
    return env.Undefined();
  }
  int s = DupFd(int(sfd));
  if (s < 0) {
    int err = errno;
    close(c);
    Throw(env, err, "dup");
    return env.Undefined();
  }
  // The description is shared with the JS socket's (already non-blocking); make sure.
  for (int fd : {c, s}) {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  }
  Conn* conn = new Conn();
  // Kept here: once queued, the Conn belongs to the epoll thread and may be freed at once.
  uint64_t id = plane->nextId++;
  conn->id = id;
  conn->maxPayload = uint64_t(maxPayload);
  conn->halfCloseMs = halfClose;
  conn->side[kClient].fd = c;
  conn->side[kService].fd = s;
  Command* cmd = new Command{Command::kAdd, conn, id, Bytes(info[4]), Bytes(info[5]), Bytes(info[6])};
  {
    std::lock_guard<std::mutex> lock(plane->mu);
    plane->commands.push_back(cmd);
  }
  if (plane->live++ == 0) plane->tsfn.Ref(env);
  uint64_t one = 1;
  if (write(plane->wakefd, &one, sizeof one) < 0 && errno != EAGAIN) {
    // An eventfd write fails only on overflow (EAGAIN): the thread is awake anyway.
  }
  return Napi::Number::New(env, double(id));
}

// close(id): the client side closes now, the service after its rest (JS reported already).
Napi::Value CloseConn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (plane == nullptr || !info[0].IsNumber()) return env.Undefined();
  Command* cmd = new Command{Command::kClose, nullptr, uint64_t(info[0].As<Napi::Number>().Int64Value()), {}, {}, {}};
  {
    std::lock_guard<std::mutex> lock(plane->mu);
    plane->commands.push_back(cmd);
  }
  uint64_t one = 1;
  if (write(plane->wakefd, &one, sizeof one) < 0) {
  }
  return env.Undefined();
}

// counts(id, Float64Array(6)): client bytes in/out, frames in; service bytes in/out,
// frames in. False when the connection is gone (the end report has the last counts).
Napi::Value Counts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (plane == nullptr || !info[0].IsNumber() || !info[1].IsTypedArray()) return Napi::Boolean::New(env, false);
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() < 6) return Napi::Boolean::New(env, false);
  double* out = ta.As<Napi::Float64Array>().Data();
  uint64_t id = uint64_t(info[0].As<Napi::Number>().Int64Value());
  std::lock_guard<std::mutex> lock(plane->mu);
  auto it = plane->conns.find(id);
  if (it == plane->conns.end()) return Napi::Boolean::New(env, false);
  Conn* c = it->second;
  for (int i = 0; i < 2; i++) {
    out[i * 3 + 0] = double(c->side[i].bytesIn.load(std::memory_order_relaxed));
    out[i * 3 + 1] = double(c->side[i].bytesOut.load(std::memory_order_relaxed));
    out[i * 3 + 2] = double(c->side[i].framesIn.load(std::memory_order_relaxed));
  }
  return Napi::Boolean::New(env, true);
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  Napi::Object dp = Napi::Object::New(env);
  dp.Set("start", Napi::Function::New(env, Start));
  dp.Set("add", Napi::Function::New(env, AddConn));
  dp.Set("close", Napi::Function::New(env, CloseConn));
  dp.Set("counts", Napi::Function::New(env, Counts));
  exports.Set("dataPlane", dp);
}

}  // namespace dataplane
