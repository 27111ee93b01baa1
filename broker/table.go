package broker

import (
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// request is one entry of the broker's closed request table.
type request struct {
	// name is the short name written to the decision log.
	name string
}

// requestTable is every request type the broker serves. A method that is not
// here is refused by the interceptor even if a handler exists for it.
var requestTable = map[string]request{
	brokerv1.BrokerService_Probe_FullMethodName:          {name: "Probe"},
	brokerv1.BrokerService_RunCommand_FullMethodName:     {name: "RunCommand"},
	brokerv1.BrokerService_RunTrace_FullMethodName:       {name: "RunTrace"},
	brokerv1.BrokerService_CollectMetrics_FullMethodName: {name: "CollectMetrics"},
	brokerv1.BrokerService_ProxmoxGet_FullMethodName:     {name: "ProxmoxGet"},
	brokerv1.BrokerService_RunPatch_FullMethodName:       {name: "RunPatch"},
	brokerv1.BrokerService_PatchResult_FullMethodName:    {name: "PatchResult"},
	brokerv1.BrokerService_Reboot_FullMethodName:         {name: "Reboot"},
}
