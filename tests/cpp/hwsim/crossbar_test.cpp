// Crossbar harness: one address per cycle per slave port, round-robin between masters, parallel slaves.
#include <gtest/gtest.h>

#include "crossbar.h"

using namespace spatten::hwsim;

namespace {
struct Slave : Component {
  Link<spatten::hwsim::Run> link;
  std::vector<std::pair<uint32_t, Cycle>> got;  // (job, arrival)
  Slave(EventQueue& q, size_t depth) : Component("slave", q), link(q, depth, 2, this, 0) {}
  void handle(uint32_t, uint64_t) override {
    while (link.ready()) {
      got.emplace_back(link.item(0).job, link.arrival(0));
      link.pop();
    }
  }
};
spatten::hwsim::Run run(uint32_t job, uint32_t n) {
  spatten::hwsim::Run r;
  r.job = job;
  r.count[0] = n;
  return r;
}
}  // namespace

TEST(Crossbar, RoundRobinBetweenMastersOnOneSlave) {
  EventQueue q;
  Slave s(q, 64);
  Crossbar x("crossbar", q, 2, {&s.link});
  x.enqueue(0, 0, run(1, 4));
  x.enqueue(0, 0, run(2, 4));
  x.enqueue(1, 0, run(3, 4));
  q.run();
  // master 0, then master 1, then master 0 again; each run holds the port 4 cycles; +2 cycles latency
  ASSERT_EQ(s.got.size(), 3u);
  EXPECT_EQ(s.got[0], (std::pair<uint32_t, Cycle>{1, 2}));
  EXPECT_EQ(s.got[1], (std::pair<uint32_t, Cycle>{3, 6}));
  EXPECT_EQ(s.got[2], (std::pair<uint32_t, Cycle>{2, 10}));
  EXPECT_EQ(x.grants(0), 2u);
  EXPECT_EQ(x.grants(1), 1u);
}

TEST(Crossbar, SlavesWorkInParallelAndBackPressureStalls) {
  EventQueue q;
  Slave a(q, 64), b(q, 1);
  Crossbar x("crossbar", q, 2, {&a.link, &b.link});
  x.enqueue(0, 0, run(1, 8));
  x.enqueue(1, 1, run(2, 8));
  q.run();
  EXPECT_EQ(a.got[0].second, 2u);
  EXPECT_EQ(b.got[0].second, 2u);  // different slaves: same cycle
  EXPECT_EQ(x.master_for(0, 5), x.master_for(2, 5));
}

TEST(Crossbar, MasterMappingCoversAllMasters) {
  EventQueue q;
  std::vector<std::unique_ptr<Slave>> slaves;
  std::vector<Link<spatten::hwsim::Run>*> links;
  for (int i = 0; i < 16; ++i) {
    slaves.push_back(std::make_unique<Slave>(q, 8));
    links.push_back(&slaves.back()->link);
  }
  Crossbar x("crossbar", q, 32, links);
  std::vector<int> used(32, 0);
  for (uint32_t job = 0; job < 2; ++job)
    for (uint32_t s = 0; s < 16; ++s) used[x.master_for(job, s)]++;
  for (int u : used) EXPECT_EQ(u, 1);  // the 32 x 16 crossbar: two masters per DRAM channel
}
