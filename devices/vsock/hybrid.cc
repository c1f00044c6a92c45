#include "devices/vsock/hybrid.h"

#include <sys/socket.h>

#include <charconv>
#include <cstring>

namespace moss::vsock {

Result<uint32_t> parse_connect_line(std::string_view line) {
  constexpr std::string_view kVerb = "CONNECT ";
  if (line.size() > kMaxConnectLine) return make_error("the request line is longer than " + std::to_string(kMaxConnectLine) + " bytes");
  if (line.empty() || line.back() != '\n') return make_error("the request line does not end in a newline");
  line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!line.starts_with(kVerb)) return make_error("the request is not \"CONNECT <port>\"");
  std::string_view digits = line.substr(kVerb.size());
  if (digits.empty() || digits.size() > 10) return make_error("\"CONNECT\" needs a port number of 1 to 10 digits");
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return make_error("the port after \"CONNECT\" must be decimal digits only");
  }
  uint64_t v = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (v > UINT32_MAX) return make_error("the port after \"CONNECT\" must be below 2^32");
  return static_cast<uint32_t>(v);
}

std::string ok_line(uint32_t host_port) { return "OK " + std::to_string(host_port) + "\n"; }

std::string guest_port_path(const std::string& uds_path, uint32_t port) { return uds_path + "_" + std::to_string(port); }

namespace {

std::array<uint8_t, kConnectMessageBytes> pack(uint32_t a, uint32_t b) {
  std::array<uint8_t, kConnectMessageBytes> out;
  std::memcpy(out.data(), &a, 4);
  std::memcpy(out.data() + 4, &b, 4);
  return out;
}

Result<std::pair<uint32_t, uint32_t>> unpack(std::span<const uint8_t> packet, const char* what) {
  if (packet.size() != kConnectMessageBytes) {
    return make_error(std::string("a connect ") + what + " must be " + std::to_string(kConnectMessageBytes) + " bytes, not " +
                      std::to_string(packet.size()));
  }
  uint32_t a, b;
  std::memcpy(&a, packet.data(), 4);
  std::memcpy(&b, packet.data() + 4, 4);
  return std::make_pair(a, b);
}

}  // namespace

std::array<uint8_t, kConnectMessageBytes> encode_connect_request(const ConnectRequest& r) { return pack(r.seq, r.port); }

std::array<uint8_t, kConnectMessageBytes> encode_connect_reply(const ConnectReply& r) {
  return pack(r.seq, static_cast<uint32_t>(r.error));
}

Result<ConnectRequest> decode_connect_request(std::span<const uint8_t> packet) {
  MOSS_TRY(auto v, unpack(packet, "request"));
  return ConnectRequest{v.first, v.second};
}

Result<ConnectReply> decode_connect_reply(std::span<const uint8_t> packet) {
  MOSS_TRY(auto v, unpack(packet, "reply"));
  int32_t error = static_cast<int32_t>(v.second);
  if (error < 0 || error > 4095) return make_error("a connect reply carries the impossible errno " + std::to_string(error));
  return ConnectReply{v.first, error};
}

ssize_t send_connect_reply(int channel, const ConnectReply& r, int fd, int flags) {
  auto bytes = encode_connect_reply(r);
  iovec iov{bytes.data(), bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  return ::sendmsg(channel, &msg, MSG_NOSIGNAL | flags);
}

}  // namespace moss::vsock
