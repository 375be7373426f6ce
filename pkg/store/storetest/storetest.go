// Package storetest is a conformance suite for the store on one database. A
// test of a database calls Run with a constructor:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, openMigrated) }
//
// open is called once per case (with the case's t) and returns a migrated
// store on a database of its own (for Postgres: a fresh database), so cases
// run in parallel and never see each other's rows. The constructor registers
// its own cleanup (closing the store) with t.Cleanup.
//
// The cases are the store's behaviour that does not depend on the database;
// tests that tamper with rows in SQL of one dialect stay in package store.
package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// Run runs every case of the suite, in parallel, each on the store open returns.
func Run(t *testing.T, open func(t *testing.T) *store.Store) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			require.NotNil(t, s, "open returned nil")
			tc.fn(t, s)
		})
	}
}

var cases = []struct {
	name string
	fn   func(t *testing.T, s *store.Store)
}{
	{"AlertRulesCRUD", testAlertRulesCRUD},
	{"SyncAlerts", testSyncAlerts},
	{"SyncAlertsConcurrent", testSyncAlertsConcurrent},
	{"AlertConditionQueries", testAlertConditionQueries},
	{"WebhooksAndDeliveries", testWebhooksAndDeliveries},
	{"WebhookLimit", testWebhookLimit},
	{"AgentCredentials", testAgentCredentials},
	{"RotateAgentCredential", testRotateAgentCredential},
	{"ReenrollSecret", testReenrollSecret},
	{"RevokeAgent", testRevokeAgent},
	{"EnrollmentLimits", testEnrollmentLimits},
	{"InsertTelemetry", testInsertTelemetry},
	{"MarkAgentsOnline", testMarkAgentsOnline},
	{"RecordAudits", testRecordAudits},
	{"Maintenance", testMaintenance},
	{"SigningKeys", testSigningKeys},
	{"AgentFilters", testAgentFilters},
	{"TelemetrySeries", testTelemetrySeries},
	{"ListCommands", testListCommands},
	{"ServiceInstances", testServiceInstances},
	{"Activity", testActivity},
	{"PurgeSealedArgs", testPurgeSealedArgs},
	{"APIKeysStore", testAPIKeysStore},
	{"EnrollmentSecretsStore", testEnrollmentSecretsStore},
	{"IdempotencyKeysStore", testIdempotencyKeysStore},
	{"Targeting", testTargeting},
	{"Caps", testCaps},
	{"MaxErrorsAndCancel", testMaxErrorsAndCancel},
	{"AgentDisconnectRetries", testAgentDisconnectRetries},
	{"ReportedAttributesDoNotTarget", testReportedAttributesDoNotTarget},
	{"PatchAgentAttributes", testPatchAgentAttributes},
	{"AllowedCapabilities", testAllowedCapabilities},
	{"TrustReportedAttributes", testTrustReportedAttributes},
	{"CommandLifecycle", testCommandLifecycle},
	{"ClaimSkipsOfflineAndOrdersByPriority", testClaimSkipsOfflineAndOrdersByPriority},
	{"ConcurrentClaimsNeverOverlap", testConcurrentClaimsNeverOverlap},
	{"SweepRetriesTimesOutAndExpires", testSweepRetriesTimesOutAndExpires},
	{"AgentsOnlineOfflineTouchList", testAgentsOnlineOfflineTouchList},
	{"ConcurrentResultBatchesFinishACommandOnce", testConcurrentResultBatches},
	{"StatusChangesAreObservedInCommitOrder", testStatusChangesInOrder},
	{"AuditListFilters", testAuditListFilters},
	{"ScheduleFiresEachDueTimeOnce", testScheduleFiresEachDueTimeOnce},
	{"ScheduleOverlap", testScheduleOverlap},
	{"ScheduleCatchUp", testScheduleCatchUp},
	{"SchedulePauseResumeEndAndFailures", testSchedulePauseResumeEndAndFailures},
	{"TemplateVersions", testTemplateVersions},
}
