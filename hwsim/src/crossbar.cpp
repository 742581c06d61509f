#include "crossbar.h"

#include <limits>

namespace spatten::hwsim {

Crossbar::Crossbar(const std::string& name, EventQueue& q, uint32_t masters, std::vector<Link<Run>*> slave_links)
    : Component(name, q),
      masters_(masters),
      slaves_(uint32_t(slave_links.size())),
      out_(std::move(slave_links)),
      voq_(masters, std::vector<std::deque<Run>>(slaves_)),
      master_free_(masters, 0),
      slave_free_(slaves_, 0),
      last_grant_(slaves_, masters - 1),
      wake_at_(slaves_, std::numeric_limits<Cycle>::max()),
      grants_(masters, 0) {
  for (uint32_t s = 0; s < slaves_; ++s) out_[s]->set_producer(this, kTry, s);
}

uint32_t Crossbar::master_for(uint32_t job, uint32_t slave) const {
  if (masters_ >= slaves_) {
    const uint32_t per_slave = masters_ / slaves_;
    return slave + slaves_ * (job % per_slave);
  }
  return slave % masters_;
}

void Crossbar::enqueue(uint32_t master, uint32_t slave, const Run& run) {
  voq_[master][slave].push_back(run);
  wake(slave, now());
}

void Crossbar::wake(uint32_t slave, Cycle at) {
  if (wake_at_[slave] <= at && wake_at_[slave] >= now()) return;  // an earlier try is already pending
  wake_at_[slave] = at;
  queue().schedule(at, this, kTry, slave);
}

void Crossbar::handle(uint32_t, uint64_t slave) {
  if (wake_at_[slave] == now()) wake_at_[slave] = std::numeric_limits<Cycle>::max();
  try_grant(uint32_t(slave));
}

void Crossbar::try_grant(uint32_t s) {
  const Cycle t = now();
  if (t < slave_free_[s]) return wake(s, slave_free_[s]);
  if (out_[s]->full()) return;  // the channel wakes us when it takes a run
  Cycle earliest_master = std::numeric_limits<Cycle>::max();
  for (uint32_t i = 1; i <= masters_; ++i) {
    const uint32_t m = (last_grant_[s] + i) % masters_;
    if (voq_[m][s].empty()) continue;
    if (master_free_[m] > t) {
      earliest_master = std::min(earliest_master, master_free_[m]);
      continue;
    }
    const Run run = voq_[m][s].front();
    voq_[m][s].pop_front();
    out_[s]->push(run);
    slave_free_[s] = master_free_[m] = t + run.total();
    last_grant_[s] = m;
    ++grants_[m];
    busy_cycles_ += run.total();
    return wake(s, slave_free_[s]);
  }
  if (earliest_master != std::numeric_limits<Cycle>::max()) wake(s, earliest_master);
}

}  // namespace spatten::hwsim
