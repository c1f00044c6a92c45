#include "devices/blk/request.h"

#include <gtest/gtest.h>

#include <cstring>

#include "devices/virtio/test_chain.h"

namespace moss::blk {
namespace {

using virtio::testing::ChainBuilder;

std::vector<uint8_t> header(uint32_t type, uint64_t sector) {
  std::vector<uint8_t> h(16, 0);
  std::memcpy(&h[0], &type, 4);
  std::memcpy(&h[8], &sector, 8);
  return h;
}

std::vector<uint8_t> segment(uint64_t sector, uint32_t n, uint32_t flags) {
  std::vector<uint8_t> s(16);
  std::memcpy(&s[0], &sector, 8);
  std::memcpy(&s[8], &n, 4);
  std::memcpy(&s[12], &flags, 4);
  return s;
}

const DiskGeometry kDisk{1024, false, true, true};

TEST(BlkRequest, ReadAcrossSegmentsWithStatusInTheLastByte) {
  ChainBuilder b;
  b.readable(header(0, 10)).writable(512).writable(513);
  auto p = parse_request(b.chain, kDisk);
  ASSERT_TRUE(p.request) << p.error->message;
  EXPECT_EQ(p.request->type, Type::kIn);
  EXPECT_EQ(p.request->sector, 10u);
  EXPECT_EQ(p.request->data_bytes, 1024u);
  ASSERT_EQ(p.request->in_data.size(), 2u);
  EXPECT_EQ(p.request->in_data[1].size(), 512u);
  EXPECT_EQ(p.request->status.data(), b.storage[2].data() + 512);
}

TEST(BlkRequest, WriteFlushGetIdDiscardAndWriteZeroes) {
  ChainBuilder w;
  w.readable(header(1, 0)).readable(std::vector<uint8_t>(1024, 7)).writable(1);
  auto p = parse_request(w.chain, kDisk);
  ASSERT_TRUE(p.request);
  EXPECT_EQ(p.request->type, Type::kOut);
  EXPECT_EQ(p.request->data_bytes, 1024u);

  ChainBuilder f;
  f.readable(header(4, 0)).writable(1);
  EXPECT_EQ(parse_request(f.chain, kDisk).request->type, Type::kFlush);

  ChainBuilder id;
  id.readable(header(8, 0)).writable(21);
  EXPECT_EQ(parse_request(id.chain, kDisk).request->data_bytes, 20u);

  ChainBuilder d;
  d.readable(header(11, 0)).readable(segment(0, 8, 0)).readable(segment(100, 4, 0)).writable(1);
  auto dp = parse_request(d.chain, kDisk);
  ASSERT_TRUE(dp.request);
  ASSERT_EQ(dp.request->ranges.size(), 2u);
  EXPECT_EQ(dp.request->ranges[1].sector, 100u);

  ChainBuilder z;
  z.readable(header(13, 0)).readable(segment(1020, 4, 1)).writable(1);
  auto zp = parse_request(z.chain, kDisk);
  ASSERT_TRUE(zp.request);
  EXPECT_TRUE(zp.request->ranges[0].unmap);
}

void expect_error(ChainBuilder& b, Status s, const char* needle, const DiskGeometry& disk = kDisk) {
  auto p = parse_request(b.chain, disk);
  ASSERT_FALSE(p.request);
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->status, s) << p.error->message;
  EXPECT_NE(p.error->message.find(needle), std::string::npos) << p.error->message;
}

TEST(BlkRequest, MalformedRequestsGetAStatus) {
  ChainBuilder no_status;
  no_status.readable(header(0, 0));
  auto p = parse_request(no_status.chain, kDisk);
  ASSERT_TRUE(p.error);
  EXPECT_TRUE(p.error->status_byte.empty());

  ChainBuilder short_hdr;
  short_hdr.readable(std::vector<uint8_t>(8, 0)).writable(1);
  expect_error(short_hdr, kIoErr, "shorter than 16");

  ChainBuilder past_end;
  past_end.readable(header(0, 1023)).writable(1025);
  expect_error(past_end, kIoErr, "past the end");

  ChainBuilder overflow;
  overflow.readable(header(1, ~0ull - 1)).readable(std::vector<uint8_t>(1024)).writable(1);
  expect_error(overflow, kIoErr, "past the end");

  ChainBuilder partial;
  partial.readable(header(0, 0)).writable(100);
  expect_error(partial, kIoErr, "whole number of sectors");

  ChainBuilder ro;
  ro.readable(header(1, 0)).readable(std::vector<uint8_t>(512)).writable(1);
  expect_error(ro, kIoErr, "read-only", DiskGeometry{1024, true, true, true});

  ChainBuilder unknown;
  unknown.readable(header(99, 0)).writable(1);
  expect_error(unknown, kUnsupported, "unknown request type 99");

  ChainBuilder read_with_data;
  read_with_data.readable(header(0, 0)).readable(std::vector<uint8_t>(512)).writable(513);
  expect_error(read_with_data, kIoErr, "device-readable data");

  ChainBuilder discard_unmap;
  discard_unmap.readable(header(11, 0)).readable(segment(0, 1, 1)).writable(1);
  expect_error(discard_unmap, kUnsupported, "unsupported flags");

  ChainBuilder discard_bad_len;
  discard_bad_len.readable(header(11, 0)).readable(std::vector<uint8_t>(10)).writable(1);
  expect_error(discard_bad_len, kIoErr, "bad length");

  ChainBuilder discard_past;
  discard_past.readable(header(11, 0)).readable(segment(1000, 100, 0)).writable(1);
  expect_error(discard_past, kIoErr, "past the end");

  ChainBuilder not_negotiated;
  not_negotiated.readable(header(13, 0)).readable(segment(0, 1, 0)).writable(1);
  expect_error(not_negotiated, kUnsupported, "not negotiated", DiskGeometry{1024, false, true, false});

  ChainBuilder flush_data;
  flush_data.readable(header(4, 0)).writable(9);
  expect_error(flush_data, kIoErr, "carries data");
}

}  // namespace
}  // namespace moss::blk
