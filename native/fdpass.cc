// fdpass: passing descriptors over Unix stream sockets (SCM_RIGHTS), for the ipcd
// lookup (PROTOCOL.md §4, §4a). Node's net cannot send or receive descriptors, and a
// lookup socket read by Node loses the passed descriptor, so this addon owns the lookup
// socket end to end. Only mechanism lives here; src/fdpass.ts validates arguments and
// turns the errors below ({errno, syscall} or a plain message) into coded IpcErrors.
#include <napi.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace dataplane {
void Register(Napi::Env env, Napi::Object exports);  // native/dataplane.cc
}

namespace {

// More than one descriptor is a protocol error, but room for a few lets us close the
// extras ourselves instead of the kernel dropping them with MSG_CTRUNC.
constexpr size_t kMaxFds = 4;

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

Napi::Value Throw(Napi::Env env, int err, const char* syscall) {
  ErrnoError(env, err, syscall).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Reads the leading number arguments; false (with a TypeError pending) on a wrong type,
// so a bad call never goes on with descriptor 0.
bool Ints(const Napi::CallbackInfo& info, std::initializer_list<int64_t*> out) {
  size_t i = 0;
  for (int64_t* value : out) {
    if (!info[i].IsNumber()) {
      Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number")
          .ThrowAsJavaScriptException();
      return false;
    }
    *value = info[i++].As<Napi::Number>().Int64Value();
  }
  return true;
}

// One iovec, and an optional control buffer.
msghdr Message(iovec* iov, char* control, size_t controlLength) {
  msghdr msg = {};
  msg.msg_iov = iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = controlLength;
  return msg;
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Waits until `fd` is ready for `events` or the monotonic `deadline` (ms) passes.
// Returns 0 when ready (errors and hang-ups count as ready: the next call reports them),
// else an errno (ETIMEDOUT). Every wait in this file is bounded by a deadline.
int WaitFor(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - NowMs();
    pollfd p = {fd, events, 0};
    int n = poll(&p, 1, left > 0 ? int(left) : 0);
    if (n > 0) return (p.revents & POLLNVAL) ? EBADF : 0;
    if (n == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

// sendmsg with MSG_DONTWAIT whatever the socket's mode, waiting for room with a
// bounded poll: a blocking socket never blocks the event loop past the deadline.
// MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
int SendAll(int sock, msghdr* msg, int64_t deadline) {
  size_t left = msg->msg_iov[0].iov_len;
  while (left > 0) {
    ssize_t n = sendmsg(sock, msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
      if (int err = WaitFor(sock, POLLOUT, deadline)) return err;
      continue;
    }
    // The descriptor travels with the first byte sent: never attach it twice.
    msg->msg_control = nullptr;
    msg->msg_controllen = 0;
    msg->msg_iov[0].iov_base = static_cast<char*>(msg->msg_iov[0].iov_base) + n;
    msg->msg_iov[0].iov_len = left -= size_t(n);
  }
  return 0;
}

// sendFd(socketFd, fd, timeoutMs, setBlocking): the original's exact layout, 2 data
// bytes "ok" (no frame) and one SCM_RIGHTS cmsg: cmsg_len 20, msg_controllen 24.
Napi::Value SendFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t sock, fd, timeout;
  if (!Ints(info, {&sock, &fd, &timeout})) return env.Undefined();
  // The original hands over a blocking socket and its clients read it as such; the mode
  // lives in the shared file description, so clear O_NONBLOCK before sending and restore
  // it if the send fails (the caller's event loop still polls its copy).
  int flags = -1;
  if (info[3].ToBoolean().Value()) {
    flags = fcntl(int(fd), F_GETFL);
    if (flags < 0) return Throw(env, errno, "fcntl");
    if (!(flags & O_NONBLOCK)) flags = -1;  // already blocking: nothing to restore
    else if (fcntl(int(fd), F_SETFL, flags & ~O_NONBLOCK) < 0) return Throw(env, errno, "fcntl");
  }
  char data[2] = {'o', 'k'};
  iovec iov = {data, sizeof data};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);  // padding bytes go on the wire: keep them zero
  msghdr msg = Message(&iov, control, sizeof control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  int passed = int(fd);
  memcpy(CMSG_DATA(cmsg), &passed, sizeof passed);
  int err = SendAll(int(sock), &msg, NowMs() + timeout);
  if (err != 0) {
    if (flags >= 0 && iov.iov_len == sizeof data) fcntl(int(fd), F_SETFL, flags);
    return Throw(env, err, "sendmsg");
  }
  return env.Undefined();
}

// receiveFd(socketFd, timeoutMs, maxBytes) -> Promise<{data, fd}>. Waits on a libuv
// threadpool thread (poll then recvmsg), so it is always bounded by a deadline taken at
// call time: time spent queued behind other threadpool work counts.
class ReceiveWorker : public Napi::AsyncWorker {
 public:
  ReceiveWorker(Napi::Env env, int sock, int64_t deadline, size_t maxBytes)
      : Napi::AsyncWorker(env, "fdpass.receiveFd"),
        deferred_(Napi::Promise::Deferred::New(env)),
        sock_(sock),
        deadline_(deadline),
        data_(maxBytes) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {  // threadpool thread: no N-API calls here
    for (;;) {
      if ((err_ = WaitFor(sock_, POLLIN, deadline_)) != 0) return;
      iovec iov = {data_.data(), data_.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
      msghdr msg = Message(&iov, control, sizeof control);
      // MSG_CMSG_CLOEXEC: the received descriptor must not leak into child processes
      // spawned before the caller wraps it.
      ssize_t n = recvmsg(sock_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        err_ = errno;
        syscall_ = "recvmsg";
        return;
      }
      length_ = size_t(n);
      truncated_ = (msg.msg_flags & MSG_CTRUNC) != 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
          int fd;
          memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          fds_.push_back(fd);
        }
      }
      return;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, syscall_).Value());
      return;
    }
    if (truncated_ || fds_.size() > 1) {
      for (int fd : fds_) close(fd);  // ours now: do not leak what we refuse
      deferred_.Reject(Napi::Error::New(env, "expected one descriptor, received " +
                                                 std::to_string(fds_.size()) +
                                                 (truncated_ ? " and more (truncated)" : ""))
                           .Value());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("data", Napi::Buffer<char>::Copy(env, data_.data(), length_));
    result.Set("fd", fds_.empty() ? env.Null() : Napi::Number::New(env, fds_[0]));
    deferred_.Resolve(result);
  }

 private:
  Napi::Promise::Deferred deferred_;
  int sock_;
  int64_t deadline_;
  std::vector<char> data_;
  size_t length_ = 0;
  std::vector<int> fds_;
  bool truncated_ = false;
  int err_ = 0;
  const char* syscall_ = "poll";
};

Napi::Value ReceiveFd(const Napi::CallbackInfo& info) {
  int64_t sock, timeout, maxBytes;
  if (!Ints(info, {&sock, &timeout, &maxBytes})) return info.Env().Undefined();
  auto* worker = new ReceiveWorker(info.Env(), int(sock), NowMs() + timeout, size_t(maxBytes));
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself after OnOK
  return promise;
}

// connectUnix(path) -> fd. Non-blocking connect: a Unix socket connects at once or
// fails (EAGAIN when the listener's backlog is full), so the event loop never waits.
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].ToString().Utf8Value();
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Throw(env, ENAMETOOLONG, "connect");
  }
  memcpy(addr.sun_path, path.data(), path.size());
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock < 0) return Throw(env, errno, "socket");
  int rc;
  do rc = connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    close(sock);
    return Throw(env, err, "connect");
  }
  return Napi::Number::New(env, sock);
}

// writeAll(fd, timeoutMs, buffer): the lookup frame, without Node streams.
Napi::Value WriteAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t sock, timeout;
  if (!Ints(info, {&sock, &timeout})) return env.Undefined();
  if (!info[2].IsBuffer()) {
    Napi::TypeError::New(env, "argument 2 must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<char> buf = info[2].As<Napi::Buffer<char>>();
  iovec iov = {buf.Data(), buf.Length()};
  msghdr msg = Message(&iov, nullptr, 0);
  if (int err = SendAll(int(sock), &msg, NowMs() + timeout)) return Throw(env, err, "sendmsg");
  return env.Undefined();
}

// socketPair() -> [fd, fd]: a connected pair, both close-on-exec.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    return Throw(env, errno, "socketpair");
  }
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(uint32_t(0), Napi::Number::New(env, sv[0]));
  pair.Set(uint32_t(1), Napi::Number::New(env, sv[1]));
  return pair;
}

// close(fd, shutdownOnly). shutdown() wakes a receive waiting in poll() on another
// thread, where close() would not and could let the number be reused under it
// (ENOTCONN: already down). On Linux close() releases the number even on EINTR.
Napi::Value Close(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!Ints(info, {&fd})) return info.Env().Undefined();
  if (info[1].ToBoolean().Value()) {
    if (shutdown(int(fd), SHUT_RDWR) < 0 && errno != ENOTCONN) {
      return Throw(info.Env(), errno, "shutdown");
    }
  } else if (close(int(fd)) < 0 && errno != EINTR) {
    return Throw(info.Env(), errno, "close");
  }
  return info.Env().Undefined();
}

// notify(socketPath, message): one datagram to systemd's NOTIFY_SOCKET (sd_notify(3)
// without libsystemd; Node has no Unix datagram sockets). A path starting with '@' is in
// the abstract namespace. MSG_DONTWAIT: a service manager that stopped reading must not
// block the event loop; the caller logs the EAGAIN.
Napi::Value Notify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "notify(socketPath, message) takes two strings").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string message = info[1].As<Napi::String>().Utf8Value();
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() < 2 || path.size() >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    return Throw(env, EINVAL, "notify");
  }
  memcpy(addr.sun_path, path.data(), path.size());
  socklen_t length = socklen_t(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract: no trailing NUL counted
  else length += 1;
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return Throw(env, errno, "socket");
  ssize_t n;
  do n = sendto(sock, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                reinterpret_cast<sockaddr*>(&addr), length);
  while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : 0;
  close(sock);
  if (err != 0) return Throw(env, err, "sendto");
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  dataplane::Register(env, exports);
  exports.Set("sendFd", Napi::Function::New(env, SendFd));
  exports.Set("receiveFd", Napi::Function::New(env, ReceiveFd));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix));
  exports.Set("writeAll", Napi::Function::New(env, WriteAll));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("notify", Napi::Function::New(env, Notify));
  return exports;
}

}  // namespace

NODE_API_MODULE(fdpass, Init)
