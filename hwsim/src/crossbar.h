// Address crossbar between the fetch channels (masters) and the DRAM channels (slaves), 32 x 16 in the full
// preset. Each slave port moves one address per cycle; when several masters hold work for one slave it grants
// them round-robin, one row-run at a time (a run of n addresses holds the port and the master n cycles;
// addresses cut through, so the DRAM channel sees address i at grant + latency + i).
#pragma once

#include <deque>
#include <vector>

#include "dram.h"
#include "event_queue.h"

namespace spatten::hwsim {

class Crossbar : public Component {
 public:
  enum Kind : uint32_t { kTry = 0 };
  Crossbar(const std::string& name, EventQueue& q, uint32_t masters, std::vector<Link<Run>*> slave_links);

  // Queues a run at a master for the run's slave and starts arbitration.
  void enqueue(uint32_t master, uint32_t slave, const Run& run);
  // The master a fetch job uses for a slave: jobs alternate over the masters that serve the slave.
  uint32_t master_for(uint32_t job, uint32_t slave) const;
  uint32_t masters() const { return masters_; }
  uint64_t grants(uint32_t master) const { return grants_[master]; }
  void handle(uint32_t kind, uint64_t slave) override;

 private:
  void try_grant(uint32_t slave);
  void wake(uint32_t slave, Cycle at);

  uint32_t masters_, slaves_;
  std::vector<Link<Run>*> out_;
  std::vector<std::vector<std::deque<Run>>> voq_;  // [master][slave]
  std::vector<Cycle> master_free_, slave_free_;
  std::vector<uint32_t> last_grant_;
  std::vector<Cycle> wake_at_;
  std::vector<uint64_t> grants_;
};

}  // namespace spatten::hwsim
