package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ErrTemplateConflict: concurrent changes of one template kept taking the
// version this change was to get.
var ErrTemplateConflict = errors.New("the template changed concurrently; retry")

// Template is one version of a named command template (docs/schedules.md).
// Parameters and Defaults are JSON the API validated: the typed parameters
// and the default targeting and options.
type Template struct {
	Name        string `gorm:"primaryKey"`
	Version     int    `gorm:"primaryKey"`
	Verb        string `gorm:"not null"`
	Args        JSON   `gorm:"type:jsonb;not null"`
	Parameters  JSON   `gorm:"type:jsonb;not null"`
	Defaults    JSON   `gorm:"type:jsonb;not null"`
	Description string `gorm:"not null"`
	CreatedBy   string `gorm:"not null"`
	CreatedAt   time.Time
	RetiredAt   *time.Time
}

// TableName pins the table name.
func (Template) TableName() string { return "command_templates" }

// templateVersionAttempts bounds the retries of a version taken concurrently.
const templateVersionAttempts = 5

// SaveTemplate stores t as the next version of its name (1 for a new name, or
// for one whose versions were all retired, the version after the last) and
// the audit event, in one transaction. It returns the stored version.
func (s *Store) SaveTemplate(ctx context.Context, t Template, audit AuditEvent) (Template, error) {
	t.CreatedAt = time.Now().UTC()
	t.RetiredAt = nil
	for range templateVersionAttempts {
		var saved bool
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			var last *int
			if err := tx.Model(&Template{}).Where("name = ?", t.Name).Select("max(version)").Scan(&last).Error; err != nil {
				return fmt.Errorf("reading template versions: %w", err)
			}
			t.Version = 1
			if last != nil {
				t.Version = *last + 1
			}
			res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&t)
			if res.Error != nil {
				return fmt.Errorf("inserting template: %w", res.Error)
			}
			if res.RowsAffected == 0 {
				return nil // taken meanwhile: try the next version
			}
			saved = true
			return s.insertAudit(tx, audit, fmt.Sprintf("%s@%d", t.Name, t.Version), t.CreatedAt)
		})
		if err != nil {
			return Template{}, err
		}
		if saved {
			return t, nil
		}
	}
	return Template{}, ErrTemplateConflict
}

// GetTemplate returns version of name, or its latest version when version is
// 0; a retired or missing one gives ErrNotFound.
func (s *Store) GetTemplate(ctx context.Context, name string, version int) (Template, error) {
	q := s.db.WithContext(ctx).Where("name = ? AND retired_at IS NULL", name)
	if version > 0 {
		q = q.Where("version = ?", version)
	}
	var t Template
	res := q.Order("version DESC").Limit(1).Find(&t)
	if res.Error != nil {
		return t, fmt.Errorf("getting template: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return t, ErrNotFound
	}
	return t, nil
}

// ListTemplates returns the latest version of every template not retired,
// by name, a page at a time (the cursor is the last name).
func (s *Store) ListTemplates(ctx context.Context, p Page) ([]Template, string, error) {
	limit := p.limit()
	q := s.db.WithContext(ctx).Where("retired_at IS NULL").
		Where("version = (SELECT max(t2.version) FROM command_templates t2 WHERE t2.name = command_templates.name AND t2.retired_at IS NULL)")
	if p.Cursor != "" {
		q = q.Where("name > ?", p.Cursor)
	}
	var rows []Template
	if err := q.Order("name").Limit(limit + 1).Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing templates: %w", err)
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = rows[limit-1].Name
	}
	return rows, next, nil
}

// TemplateVersions returns every version of name not retired, newest first;
// none gives ErrNotFound.
func (s *Store) TemplateVersions(ctx context.Context, name string) ([]Template, error) {
	var rows []Template
	if err := s.db.WithContext(ctx).Where("name = ? AND retired_at IS NULL", name).Order("version DESC").Limit(maxPageLimit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("listing template versions: %w", err)
	}
	if len(rows) == 0 {
		return nil, ErrNotFound
	}
	return rows, nil
}

// RetireTemplate retires every version of name (commands and schedules made
// from it keep what they were made of); a name with none gives ErrNotFound.
func (s *Store) RetireTemplate(ctx context.Context, name string, audit AuditEvent) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := time.Now().UTC()
		res := tx.Model(&Template{}).Where("name = ? AND retired_at IS NULL", name).Update("retired_at", now)
		if res.Error != nil {
			return fmt.Errorf("retiring template: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		return s.insertAudit(tx, audit, name, now)
	})
}
