#include "vhost-user/backend_cli.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <capnp/message.h>

#include <charconv>

#include "ipc/json.capnp.h"
#include "ipc/json.h"

namespace moss::vhost_user {

Option::Option(std::span<const char* const> args, size_t* i) : args_(args), i_(i), name_(args[*i]) {
  if (size_t eq = name_.find('='); eq != std::string::npos) {
    inline_value_ = name_.substr(eq + 1);
    name_.resize(eq);
  }
}

Result<void> Option::flag() {
  if (inline_value_) return make_error("option " + name_ + " takes no value");
  return {};
}

Result<std::string> Option::value() {
  if (inline_value_) return *inline_value_;
  if (*i_ + 1 >= args_.size()) return make_error("option " + name_ + " needs a value");
  return std::string(args_[++*i_]);
}

Result<std::string> Option::path() {
  MOSS_TRY(std::string v, value());
  if (v.empty()) return make_error(name_ + " needs a non-empty path");
  return v;
}

Result<uint64_t> Option::number(uint64_t lo, uint64_t hi, const std::string& what) {
  MOSS_TRY(std::string v, value());
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
    return make_error(name_ + " needs " + what + ", not '" + v + "'");
  }
  return n;
}

Result<int> Option::fd() {
  MOSS_TRY(uint64_t n, number(0, 1 << 30, "a file descriptor number"));
  return static_cast<int>(n);
}

Result<void> parse_backend_cli(std::span<const char* const> args, BackendArgs* out, const DeviceOption& device_option) {
  bool have_fd = false;
  for (size_t i = 0; i < args.size(); i++) {
    std::string arg = args[i];
    if (arg.rfind("--", 0) != 0) return make_error(arg == "-h" ? "use --help" : "unexpected argument '" + arg + "'");
    Option opt(args, &i);
    if (opt.name() == "--help") {
      MOSS_TRY_VOID(opt.flag());
      out->mode = BackendArgs::Mode::kHelp;
    } else if (opt.name() == "--print-capabilities") {
      MOSS_TRY_VOID(opt.flag());
      out->mode = BackendArgs::Mode::kPrintCapabilities;
    } else if (opt.name() == "--socket-path") {
      MOSS_TRY(out->socket_path, opt.path());
    } else if (opt.name() == "--fd") {
      MOSS_TRY(out->fd, opt.fd());
      have_fd = true;
    } else if (opt.name() == "--control-fd") {
      MOSS_TRY(out->control_fd, opt.fd());
    } else {
      MOSS_TRY(bool known, device_option(opt));
      if (!known) return make_error("unknown option '" + opt.name() + "'");
    }
  }
  if (out->mode == BackendArgs::Mode::kServe && out->socket_path.empty() == !have_fd) {
    return make_error(have_fd ? "give --socket-path or --fd, not both" : "give --socket-path PATH or --fd N");
  }
  if (out->control_fd >= 0 && out->control_fd == out->fd) return make_error("--control-fd and --fd must be different sockets");
  return {};
}

Result<UniqueFd> adopt_socket(int fd, const char* option) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return make_error(std::string(option) + " " + std::to_string(fd) + " is not an open socket");
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return UniqueFd(fd);
}

std::string capabilities_json(std::string_view type, std::initializer_list<std::string_view> features) {
  capnp::MallocMessageBuilder mb;
  auto caps = mb.initRoot<ipc::BackendCapabilities>();
  caps.setType(capnp::Text::Reader(type.data(), type.size()));
  auto list = caps.initFeatures(static_cast<unsigned>(features.size()));
  unsigned i = 0;
  for (std::string_view f : features) list.set(i++, capnp::Text::Reader(f.data(), f.size()));
  return ipc::to_json(caps.asReader());
}

}  // namespace moss::vhost_user
